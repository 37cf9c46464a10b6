using Microsoft.Extensions.Options;

namespace RealtimeChat.Realtime;

/// <summary>
/// Lets a user's typing notices for a conversation through at most once per <see cref="RealtimeOptions.TypingThrottle"/>,
/// however many sockets they come from. Kept per socket, the throttle let a user with 16 sockets, or one reconnecting
/// in a loop, relay a notice per socket to every other member.
/// </summary>
public sealed class TypingThrottle(TimeProvider time, IOptions<RealtimeOptions> options)
{
    private readonly TimeSpan _interval = options.Value.TypingThrottle;
    private readonly Lock _lock = new();
    // Two generations, the older dropped whole when a new one starts: memory follows who typed in the last two
    // intervals, not everyone who ever typed, with no sweep. An entry outlives its interval, all it must hold back.
    private Dictionary<(Guid User, Guid Conversation), long> _current = [];
    private Dictionary<(Guid User, Guid Conversation), long> _previous = [];
    private long _generationStarted;

    /// <returns>True when the notice is to be relayed; false within the interval after the last one relayed.</returns>
    public bool TryPass(Guid userId, Guid conversationId)
    {
        var key = (userId, conversationId);
        lock (_lock)
        {
            // Read under the lock, so that no thread stores a time older than the generation's start.
            var now = time.GetTimestamp();
            var age = time.GetElapsedTime(_generationStarted, now);
            if (age >= _interval)
            {
                // Fresh dictionaries rather than Clear(), which would keep a burst's capacity for good. Past two
                // intervals the current generation holds nothing recent enough to matter either.
                _previous = age >= 2 * _interval ? [] : _current;
                _current = [];
                _generationStarted = now;
            }
            if ((_current.TryGetValue(key, out var last) || _previous.TryGetValue(key, out last)) && time.GetElapsedTime(last, now) < _interval)
            {
                return false;
            }
            _current[key] = now;
            return true;
        }
    }

    /// <summary>Entries held now (tests check that they do not pile up).</summary>
    internal int Count
    {
        get
        {
            lock (_lock)
            {
                return _current.Count + _previous.Count;
            }
        }
    }
}
