namespace RealtimeChat;

public static class TimeProviderExtensions
{
    /// <summary>Now, truncated to the microsecond both databases keep, so stored and returned times match.</summary>
    public static DateTimeOffset UtcNowMicros(this TimeProvider time)
    {
        var now = time.GetUtcNow();
        return new DateTimeOffset(now.Ticks - now.Ticks % 10, TimeSpan.Zero);
    }
}
