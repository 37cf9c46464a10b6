namespace RealtimeChat.Tests.Infrastructure;

/// <summary>
/// The tests' one polling loop: waits until a probe gives a value (or a condition holds), and fails with what was
/// awaited once the timeout has passed.
/// </summary>
public static class Eventually
{
    public static async Task<T> Async<T>(Func<Task<T?>> probe, string what, TimeSpan? timeout = null, TimeSpan? every = null) where T : class
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for {what}.");
            }
            await Task.Delay(every ?? TimeSpan.FromMilliseconds(25));
        }
    }

    public static Task<T> Async<T>(Func<T?> probe, string what, TimeSpan? timeout = null, TimeSpan? every = null) where T : class =>
        Async(() => Task.FromResult(probe()), what, timeout, every);

    public static Task Async(Func<Task<bool>> condition, string what, TimeSpan? timeout = null, TimeSpan? every = null) =>
        Async(async () => await condition() ? "ok" : null, what, timeout, every);

    public static Task Async(Func<bool> condition, string what, TimeSpan? timeout = null, TimeSpan? every = null) =>
        Async(() => Task.FromResult(condition() ? "ok" : null), what, timeout, every);

    /// <summary>
    /// Waits until <paramref name="count"/> reaches <paramref name="expected"/>, then <paramref name="settle"/> longer so
    /// that anything extra (a duplicate) shows too. Never throws: the caller asserts on what is there, which says more
    /// than a timeout.
    /// </summary>
    public static async Task SettledAsync(Func<int> count, int expected, TimeSpan timeout, TimeSpan settle)
    {
        try
        {
            await Async(() => count() >= expected, $"{expected} of them", timeout);
            await Task.Delay(settle);
        }
        catch (TimeoutException)
        {
        }
    }
}
