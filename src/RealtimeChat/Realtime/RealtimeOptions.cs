using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Realtime;

public sealed class RealtimeOptions
{
    public const string Section = "Realtime";

    /// <summary>Ping frames keep NATs open and let us notice dead peers.</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>A connection that does not answer a ping within this time is closed.</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Frames waiting for a slow client before it is disconnected instead of buffered without bound.</summary>
    [Range(1, 1_000_000)]
    public int SendQueueLimit { get; set; } = 1024;

    /// <summary>Most events replayed for one conversation on resume; past it the client is told to resync over REST.</summary>
    [Range(1, 100_000)]
    public int MaxResumeEvents { get; set; } = 1000;

    [Range(1024, 1_048_576)]
    public int MaxClientFrameBytes { get; set; } = 16 * 1024;

    public TimeSpan TypingThrottle { get; set; } = TimeSpan.FromSeconds(2);
}
