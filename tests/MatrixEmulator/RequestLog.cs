namespace MatrixEmulator;

/// <param name="Path">Decoded path, e.g. <c>/_matrix/client/v3/rooms/!abc:localhost/send/m.room.message/t1</c>.</param>
/// <param name="Status">0 when a fault aborted the connection.</param>
/// <param name="Fault">The injected fault that answered the request, if any.</param>
/// <param name="ChunkedBody">The body came without a declared length (<c>Transfer-Encoding: chunked</c>).</param>
public sealed record LoggedRequest(DateTimeOffset At, string Method, string Path, string Query, int Status, FaultKind? Fault, bool ChunkedBody);

/// <summary>Every request the emulator received, for assertions such as "the bridge retried twice".</summary>
public sealed class RequestLog
{
    private readonly Lock _gate = new();
    private readonly List<LoggedRequest> _requests = [];

    public IReadOnlyList<LoggedRequest> All
    {
        get
        {
            lock (_gate)
            {
                return _requests.ToList();
            }
        }
    }

    /// <summary>Requests whose decoded path contains <paramref name="pathFragment"/>, optionally with this method.</summary>
    public int Count(string pathFragment, string? method = null)
    {
        lock (_gate)
        {
            return _requests.Count(r => r.Path.Contains(pathFragment, StringComparison.Ordinal) && (method is null || r.Method == method));
        }
    }

    internal void Add(LoggedRequest request)
    {
        lock (_gate)
        {
            _requests.Add(request);
        }
    }
}
