using Microsoft.AspNetCore.Http;

namespace MatrixEmulator;

public enum FaultKind
{
    /// <summary>The connection is aborted without a response, and the appservice pusher stops delivering while it is unscoped.</summary>
    Down,

    /// <summary>Latency added before the request is served normally.</summary>
    Slow,

    /// <summary>429 M_LIMIT_EXCEEDED with retry_after_ms in the body.</summary>
    RateLimited,

    /// <summary>A 5xx with M_UNKNOWN.</summary>
    ServerError,

    /// <summary>403 M_FORBIDDEN.</summary>
    Forbidden,

    /// <summary>
    /// The request is served (its event stored) but the connection drops before the answer: what a client sees when a
    /// homeserver restarts or a proxy times out after the work was done. The client cannot know the outcome.
    /// </summary>
    AnswerLost,
}

/// <summary>
/// One injected fault. Build with the factories, narrow with <see cref="On"/>/<see cref="Where"/> and <see cref="ForNext"/>,
/// then pass to <see cref="FaultInjector.Inject"/>.
/// </summary>
public sealed record Fault
{
    public required FaultKind Kind { get; init; }

    /// <summary>Which requests it hits; null = every request (and, for <see cref="FaultKind.Down"/>, the pusher too).</summary>
    public Func<HttpRequest, bool>? When { get; init; }

    /// <summary>How many matching requests it hits before it lapses; null = until removed.</summary>
    public int? Times { get; init; }

    public TimeSpan Latency { get; init; }
    public int Status { get; init; } = 500;
    public TimeSpan RetryAfter { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Send a Retry-After header with this 429 even if <see cref="EmulatorOptions.RetryAfterHeader"/> is off.</summary>
    public bool RetryAfterHeader { get; init; }

    public string Error { get; init; } = "Forbidden";

    public static Fault Down() => new() { Kind = FaultKind.Down };

    public static Fault Slow(TimeSpan latency) => new() { Kind = FaultKind.Slow, Latency = latency };

    public static Fault RateLimited(TimeSpan retryAfter) => new() { Kind = FaultKind.RateLimited, RetryAfter = retryAfter };

    public static Fault ServerError(int status = 500) => new() { Kind = FaultKind.ServerError, Status = status };

    public static Fault Forbidden(string error = "Forbidden") => new() { Kind = FaultKind.Forbidden, Error = error };

    public static Fault AnswerLost() => new() { Kind = FaultKind.AnswerLost };

    /// <summary>Only requests with this method (null = any) whose decoded path contains <paramref name="pathFragment"/>.</summary>
    public Fault On(string? method, string pathFragment) => this with
    {
        When = r => (method is null || HttpMethods.Equals(r.Method, method)) && (r.PathBase + r.Path).Value!.Contains(pathFragment, StringComparison.Ordinal),
    };

    public Fault Where(Func<HttpRequest, bool> predicate) => this with { When = predicate };

    public Fault ForNext(int requests) => this with { Times = requests };

    internal bool AffectsPusher => Kind == FaultKind.Down && When is null;
}

/// <summary>Removes its fault when disposed.</summary>
public sealed class FaultHandle : IDisposable
{
    private readonly FaultInjector _owner;

    internal FaultHandle(FaultInjector owner, Fault fault)
    {
        _owner = owner;
        Fault = fault;
    }

    public Fault Fault { get; }

    public void Dispose() => _owner.Remove(this);
}

/// <summary>The faults in force, settable and clearable while the emulator runs.</summary>
public sealed class FaultInjector
{
    private readonly Lock _gate = new();
    private readonly List<(FaultHandle Handle, int? Remaining)> _active = [];
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FaultHandle Inject(Fault fault)
    {
        var handle = new FaultHandle(this, fault);
        lock (_gate)
        {
            _active.Add((handle, fault.Times));
            Changed();
        }

        return handle;
    }

    public void Clear()
    {
        lock (_gate)
        {
            _active.Clear();
            Changed();
        }
    }

    public bool PusherPaused
    {
        get
        {
            lock (_gate)
            {
                return _active.Any(a => a.Handle.Fault.AffectsPusher);
            }
        }
    }

    internal void Remove(FaultHandle handle)
    {
        lock (_gate)
        {
            _active.RemoveAll(a => a.Handle == handle);
            Changed();
        }
    }

    internal async Task WaitWhilePusherPausedAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (!_active.Any(a => a.Handle.Fault.AffectsPusher))
                {
                    return;
                }

                changed = _changed.Task;
            }

            await changed.WaitAsync(cancellationToken);
        }
    }

    /// <summary>The faults this request runs into: every matching Slow, then at most one fault that ends the request.</summary>
    internal (TimeSpan Latency, Fault? Terminal) Match(HttpRequest request)
    {
        lock (_gate)
        {
            var latency = TimeSpan.Zero;
            Fault? terminal = null;
            for (var i = 0; i < _active.Count; i++)
            {
                var (handle, remaining) = _active[i];
                var fault = handle.Fault;
                if (fault.When is not null && !fault.When(request) || fault.Kind != FaultKind.Slow && terminal is not null)
                {
                    continue;
                }

                if (fault.Kind == FaultKind.Slow)
                {
                    latency += fault.Latency;
                }
                else
                {
                    terminal = fault;
                }

                if (remaining is not null)
                {
                    _active[i] = (handle, remaining - 1);
                }
            }

            if (_active.RemoveAll(a => a.Remaining <= 0) > 0)
            {
                Changed();
            }

            return (latency, terminal);
        }
    }

    private void Changed()
    {
        var previous = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        previous.TrySetResult();
    }
}
