namespace RealtimeChat.Infrastructure;

/// <summary>
/// One holder at a time per key (a Matrix room: its events are applied strictly one after another). A key's gate exists
/// only while someone holds or awaits it, so the memory is that of the work in progress, not of every room ever seen.
/// </summary>
public sealed class KeyedGates<TKey>(IEqualityComparer<TKey>? comparer = null) where TKey : notnull
{
    private sealed class Gate
    {
        public readonly SemaphoreSlim Semaphore = new(1, 1);

        // Holder and waiters; guarded by the map's lock. The gate leaves the map when it drops to 0, so whoever comes
        // next makes a new one and can never share a key with someone still holding the old one.
        public int Users;
    }

    private readonly Dictionary<TKey, Gate> _gates = new(comparer);

    /// <summary>Keys with a holder or a waiter right now.</summary>
    public int Count
    {
        get
        {
            lock (_gates)
            {
                return _gates.Count;
            }
        }
    }

    /// <summary>Waits for the key's turn; disposing the result ends it.</summary>
    public async Task<IDisposable> EnterAsync(TKey key, CancellationToken cancellationToken)
    {
        Gate? gate;
        lock (_gates)
        {
            if (!_gates.TryGetValue(key, out gate))
            {
                _gates[key] = gate = new Gate();
            }
            gate.Users++;
        }
        try
        {
            await gate.Semaphore.WaitAsync(cancellationToken);
        }
        catch
        {
            Leave(key, gate, held: false);
            throw;
        }
        return new Turn(this, key, gate);
    }

    private void Leave(TKey key, Gate gate, bool held)
    {
        bool last;
        lock (_gates)
        {
            last = --gate.Users == 0;
            if (last)
            {
                _gates.Remove(key);
            }
        }
        // With nobody waiting the gate is dropped as it is; otherwise the next waiter takes it over.
        if (held && !last)
        {
            gate.Semaphore.Release();
        }
    }

    private sealed class Turn(KeyedGates<TKey> owner, TKey key, Gate gate) : IDisposable
    {
        private int _ended;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _ended, 1) == 0)
            {
                owner.Leave(key, gate, held: true);
            }
        }
    }
}
