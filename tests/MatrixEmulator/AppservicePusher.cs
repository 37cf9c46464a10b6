using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace MatrixEmulator;

/// <summary>One HTTP attempt to deliver a transaction, as the appservice saw it and answered it.</summary>
/// <param name="Path">Path and query as sent, relative to the registration URL (includes the hs_token in legacy style).</param>
/// <param name="Status">The appservice's status code; null when the request failed without one.</param>
public sealed record PushAttempt(
    long TxnId,
    DateTimeOffset At,
    string Path,
    string? Authorization,
    JsonObject Body,
    IReadOnlyList<string> EventIds,
    int? Status,
    string? Error,
    TimeSpan Duration)
{
    public bool Succeeded => Status is >= 200 and < 300;

    /// <summary>Which homeserver process made the attempt: 0 before the first restart, then one more per restart.</summary>
    public int Boot { get; init; }
}

/// <summary>A <c>GET /users/{userId}</c> or <c>GET /rooms/{alias}</c> the homeserver asked the appservice.</summary>
public sealed record AppserviceQuery(DateTimeOffset At, string Kind, string Subject, string Path, string? Authorization, int? Status, string? Error);

/// <summary>
/// Delivers events to the appservice the way Synapse 1.67's ApplicationServiceScheduler does. Each event becomes its own
/// transaction, except that events arriving while a push is in flight go together in the next one (Synapse drains its
/// queue after each push), as do events held back while the homeserver is down. A failed push marks the appservice
/// down: transactions keep being created but wait, and a recoverer re-sends the oldest unsent one, same id and same
/// events, after 2 s, 4 s, 8 s... (reset after each success) until none is left. Events are serialized at each attempt,
/// so one redacted in the meantime goes out redacted, as the recording shows. Ephemeral events (typing, receipts) do
/// not survive that: the recoverer's retries carry none, and none are queued while the appservice is down, as in 1.67.
/// <para>
/// Across a restart (<see cref="HomeserverEmulator.RestartAsync"/>) it keeps what Synapse 1.67 keeps in its SQLite
/// store: the transactions not yet delivered (application_services_txns) and whether the appservice is down
/// (application_services_state). The next id is one past the highest of those, or 1 when none is left, because the
/// SQLite id generator starts from <c>max(txn_id)</c> of that table. The push in flight is dropped (its transaction
/// stays pending); a graceful stop fails it and marks the appservice down, a kill does not. Events queued behind it
/// are lost (Synapse had already moved its appservice stream position past them). A down appservice gets its
/// recoverer back only when the first new event for it arrives; a pending transaction of an appservice that was up
/// is re-sent only if a later push fails and the recoverer runs.
/// </para>
/// </summary>
public sealed class AppservicePusher : IAsyncDisposable
{
    private readonly EmulatorOptions _options;
    private readonly AppserviceRegistration _registration;
    private readonly HomeserverState _state;
    private readonly FaultInjector _faults;
    private readonly HttpClient _http;
    private CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private readonly List<QueuedItem> _queue = [];
    private readonly List<Transaction> _unsent = [];
    private readonly List<PushAttempt> _attempts = [];
    private readonly List<AppserviceQuery> _queries = [];
    private TaskCompletionSource _wake = NewSignal();
    private TaskCompletionSource _progress = NewSignal();
    private long _nextTxnId = 1;
    private bool _serviceUp = true;
    private bool _busy;
    private int _backoffExponent;
    private long _pushes;
    private long _inFlightPush;
    private DateTimeOffset _recoverAt;
    private bool _recovererScheduled;
    private bool _schedulerStarted;
    private bool _running;
    private bool _gracefulStop;
    private bool _strandNext;
    private int _boot;
    private Task _loop = Task.CompletedTask;

    internal AppservicePusher(EmulatorOptions options, HomeserverState state, FaultInjector faults)
    {
        _options = options;
        _registration = options.Appservice!;
        _state = state;
        _faults = faults;
        _http = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromSeconds(5) }) { Timeout = Timeout.InfiniteTimeSpan };
    }

    /// <summary>Every push attempt in order, failed ones included.</summary>
    public IReadOnlyList<PushAttempt> Attempts => Locked(() => _attempts.ToList());

    public IReadOnlyList<AppserviceQuery> Queries => Locked(() => _queries.ToList());

    /// <summary>False between a failed push and the recoverer's first full catch-up (kept across a restart).</summary>
    public bool ServiceUp => Locked(() => _serviceUp);

    /// <summary>The transaction id of every attempt in order, retries and attempts of earlier processes included.</summary>
    public IReadOnlyList<long> PushedTxnIds => Locked(() => _attempts.Select(a => a.TxnId).ToList());

    /// <summary>Transactions created but not delivered yet, oldest first (what application_services_txns holds).</summary>
    public IReadOnlyList<long> PendingTxnIds => Locked(() => _unsent.Select(t => t.Id).ToList());

    /// <summary>Waits until <paramref name="condition"/> holds over <see cref="Attempts"/>; throws TimeoutException otherwise.</summary>
    public async Task<IReadOnlyList<PushAttempt>> WaitForAsync(Func<IReadOnlyList<PushAttempt>, bool> condition, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            Task progress;
            List<PushAttempt> attempts;
            lock (_gate)
            {
                progress = _progress.Task;
                attempts = _attempts.ToList();
            }

            if (condition(attempts))
            {
                return attempts;
            }

            try
            {
                await progress.WaitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"Appservice pushes did not reach the expected state within {timeout}; {attempts.Count} attempts so far.");
            }
        }
    }

    /// <summary>
    /// Waits until the pusher has nothing left to do on its own: nothing queued or in flight and no recoverer waiting.
    /// A transaction abandoned by a restart while the appservice was up stays pending without making it busy.
    /// </summary>
    public async Task WaitUntilIdleAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            Task progress;
            lock (_gate)
            {
                if (!_running || (_queue.Count == 0 && !_busy && !_recovererScheduled))
                {
                    return;
                }

                progress = _progress.Task;
            }

            await progress.WaitAsync(cts.Token);
        }
    }

    internal void Start()
    {
        lock (_gate)
        {
            _running = true;
            var token = _stop.Token;
            _loop = Task.Run(() => RunAsync(token));
        }
    }

    /// <summary>
    /// The homeserver process stops: the push in flight is dropped and whatever lived only in memory is lost. On a
    /// <paramref name="graceful"/> stop (SIGTERM, a deploy) Synapse 1.67 fails that push and marks the appservice down
    /// before it exits (measured), so the first event after the start brings the recoverer; a kill leaves the state as it was.
    /// </summary>
    internal async Task StopAsync(bool graceful)
    {
        lock (_gate)
        {
            _gracefulStop = graceful;
        }

        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
            // Stopping is the expected way out of the loop.
        }

        lock (_gate)
        {
            _stop.Dispose();
            _stop = new CancellationTokenSource();
            _running = false;
            _queue.Clear();
            _busy = false;
            _inFlightPush = Idle;
            _backoffExponent = 0;
            _recovererScheduled = false;
            _schedulerStarted = false;
            _nextTxnId = _unsent.Count == 0 ? 1 : _unsent.Max(t => t.Id) + 1;
            _boot++;
            Progress();
        }
    }

    // Called under the homeserver lock, so items queue in stream order.
    internal void OnEvent(RoomEvent e, Room room)
    {
        if (IsOurs(e.Sender) || (e.Type == EventTypes.Member && e.StateKey is { } target && IsOurs(target)) || IsInterestedInRoom(room))
        {
            Enqueue(e, null);
        }
    }

    internal void OnEphemeral(JsonObject edu, Room room)
    {
        if (_registration.ReceiveEphemeral && IsInterestedInRoom(room))
        {
            Enqueue(null, edu);
        }
    }

    /// <summary>
    /// Leaves the next transaction with events unsent while later ones are pushed, as Synapse 1.67 does with one created
    /// just as its recoverer marks the appservice up: <c>_TransactionController.send</c> read the state as down before
    /// the recoverer's last look for unsent transactions and created the transaction after it. It stays pending, out of
    /// the id sequence the appservice sees, until a later push fails and a new recoverer sends the oldest unsent first.
    /// </summary>
    public void StrandNextTransaction()
    {
        lock (_gate)
        {
            _strandNext = true;
        }
    }

    /// <summary>Asks the appservice whether it has a user (Synapse: before inviting an unregistered namespaced user).</summary>
    internal Task QueryUserAsync(string userId) => QueryAsync("users", userId);

    /// <summary>Asks the appservice to create a namespaced alias that does not exist yet.</summary>
    internal Task QueryAliasAsync(string alias) => QueryAsync("rooms", alias);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
            // Stopping is the expected way out of the loop.
        }

        _http.Dispose();
        _stop.Dispose();
    }

    private bool IsOurs(string userId) =>
        userId == _state.UserIdFor(_registration.SenderLocalpart) || _registration.IsInUserNamespace(userId);

    // Synapse's is_interested_in_room: room id or alias namespaces, or a *joined* namespaced user. An invited ghost is
    // not enough: after svc_invite_ghost the recording got the invite itself but none of the room's later events.
    private bool IsInterestedInRoom(Room room) =>
        _registration.IsInRoomNamespace(room.RoomId)
        || room.Aliases.Any(_registration.IsInAliasNamespace)
        || (JsonText.String(room.GetState(EventTypes.CanonicalAlias)?.Content["alias"]) is { } alias && _registration.IsInAliasNamespace(alias))
        || room.MembersWith("join").Any(IsOurs);

    private void Enqueue(RoomEvent? e, JsonObject? edu)
    {
        var paused = _faults.PusherPaused;
        lock (_gate)
        {
            // Synapse starts its scheduler, and with it the recoverer of an appservice it had marked down, when the
            // first event for an appservice comes after start-up.
            if (e is not null && !_schedulerStarted)
            {
                _schedulerStarted = true;
                if (!_serviceUp && !_recovererScheduled)
                {
                    ScheduleRecoverer();
                }
            }

            _queue.Add(new QueuedItem(e, edu, paused ? HeldWhileDown : _inFlightPush));
            Wake();
        }
    }

    private void ScheduleRecoverer()
    {
        _backoffExponent = 0;
        _recovererScheduled = true;
        _recoverAt = DateTimeOffset.UtcNow + RecovererDelay();
    }

    // Items that arrived together (during one push, or while the homeserver was down) leave together.
    private List<QueuedItem> TakeBatch()
    {
        var arrival = _queue[0].Arrival;
        var count = arrival == Idle
            ? 1
            : _queue.TakeWhile(i => i.Arrival == arrival).Take(_options.MaxEventsPerTransaction).Count();
        var items = _queue.GetRange(0, count);
        _queue.RemoveRange(0, count);
        return items;
    }

    private async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            await _faults.WaitWhilePusherPausedAsync(ct);
            Transaction? sendNow = null;
            var recover = false;
            Task wake;
            TimeSpan wait = Timeout.InfiniteTimeSpan;
            lock (_gate)
            {
                wake = _wake.Task;
                if (_queue.Count > 0)
                {
                    // Synapse creates no transaction for ephemeral events alone while the appservice is down.
                    var batch = TakeBatch();
                    if (_serviceUp || batch.Any(i => i.Event is not null))
                    {
                        var txn = new Transaction(_nextTxnId++, batch);
                        _unsent.Add(txn);
                        var stranded = _strandNext && batch.Any(i => i.Event is not null);
                        _strandNext &= !stranded;
                        sendNow = _serviceUp && !stranded ? txn : null;
                    }

                    _busy = true;
                }
                else if (!_serviceUp && _recovererScheduled)
                {
                    var until = _recoverAt - DateTimeOffset.UtcNow;
                    recover = until <= TimeSpan.Zero;
                    wait = recover ? wait : until;
                    _busy = recover;
                }

                Progress();
            }

            if (sendNow is not null)
            {
                var sent = await SendAsync(sendNow, ct, opensArrivalWindow: true);
                lock (_gate)
                {
                    if (sent)
                    {
                        _unsent.Remove(sendNow);
                    }
                    else if (!ct.IsCancellationRequested)
                    {
                        _serviceUp = false;
                        ScheduleRecoverer();
                    }
                    else if (_gracefulStop)
                    {
                        // Measured: a graceful stop fails the push in flight (504) and Synapse marks the appservice down
                        // before it exits; a kill leaves it as it was.
                        _serviceUp = false;
                    }

                    _inFlightPush = Idle;
                    _busy = false;
                    Progress();
                }

                ct.ThrowIfCancellationRequested();
            }
            else if (recover)
            {
                await RecoverAsync(ct);
            }
            else if (_busy)
            {
                lock (_gate)
                {
                    _busy = false;
                    Progress();
                }
            }
            else
            {
                await Task.WhenAny(wake, Task.Delay(wait, ct));
            }
        }
    }

    private async Task RecoverAsync(CancellationToken ct)
    {
        while (!_faults.PusherPaused)
        {
            var oldest = Locked(() => _unsent.FirstOrDefault());
            if (oldest is null)
            {
                lock (_gate)
                {
                    _serviceUp = true;
                    _recovererScheduled = false;
                    break;
                }
            }

            var sent = await SendAsync(oldest, ct, includeEphemeral: false);
            if (sent)
            {
                lock (_gate)
                {
                    _unsent.Remove(oldest);
                }
            }

            ct.ThrowIfCancellationRequested();
            if (!sent)
            {
                lock (_gate)
                {
                    _backoffExponent++;
                    _recoverAt = DateTimeOffset.UtcNow + RecovererDelay();
                }

                break;
            }

            lock (_gate)
            {
                _backoffExponent = 0;
            }
        }

        lock (_gate)
        {
            _busy = false;
            Progress();
        }
    }

    private TimeSpan RecovererDelay()
    {
        var delay = _options.RecovererInitialDelay * Math.Pow(2, _backoffExponent);
        return _options.Scaled(delay < _options.RecovererMaxDelay ? delay : _options.RecovererMaxDelay);
    }

    // Only the queuer's own pushes batch what arrives meanwhile; the recoverer's retries do not (Synapse runs them apart).
    // The window opens under the homeserver lock, so events persisted in the same burst as this one (createRoom) stay apart.
    // The recoverer re-reads a transaction from the store, where Synapse keeps event ids only: its ephemeral part is gone.
    private async Task<bool> SendAsync(Transaction txn, CancellationToken ct, bool opensArrivalWindow = false, bool includeEphemeral = true)
    {
        var body = _state.Read(() =>
        {
            if (opensArrivalWindow)
            {
                lock (_gate)
                {
                    _inFlightPush = ++_pushes;
                }
            }

            return TransactionBody(txn, includeEphemeral);
        });
        var path = PathFor($"transactions/{txn.Id}");
        using var request = new HttpRequestMessage(HttpMethod.Put, Url(path))
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        var eventIds = txn.Items.Where(i => i.Event is not null).Select(i => i.Event!.EventId).ToList();
        var (status, error, at, duration) = await ExchangeAsync(request, ct);
        lock (_gate)
        {
            _attempts.Add(new PushAttempt(txn.Id, at, path, request.Headers.Authorization?.ToString(), body, eventIds, status, error, duration) { Boot = _boot });
            Progress();
        }

        return status is >= 200 and < 300;
    }

    private JsonObject TransactionBody(Transaction txn, bool includeEphemeral)
    {
        var now = HomeserverState.NowMs;
        var events = new JsonArray(txn.Items.Where(i => i.Event is not null).Select(i => (JsonNode)Serialize(i.Event!, now)).ToArray());
        var body = new JsonObject { ["events"] = events };
        if (_registration.ReceiveEphemeral)
        {
            var ephemeral = new JsonArray(txn.Items.Where(i => includeEphemeral && i.Edu is not null).Select(i => i.Edu!.DeepClone()).ToArray());

            // 1.67 only knew the MSC2409 name; the stable key came with the v1 path.
            body[_options.PushPathStyle == PushPathStyle.Legacy ? "de.sorunome.msc2409.ephemeral" : "ephemeral"] = ephemeral;
        }

        return body;
    }

    // The recording carried invite_room_state only on invites of the appservice's own users (txns 8 and 22), not on
    // the human's (txn 9).
    private JsonObject Serialize(RoomEvent e, long now)
    {
        var json = EventSerializer.Serialize(e, EventFormat.Appservice, now);
        if (e.InviteRoomState is not null && !IsOurs(e.StateKey!))
        {
            json.Remove("invite_room_state");
            ((JsonObject)json["unsigned"]!).Remove("invite_room_state");
        }

        return json;
    }

    private async Task QueryAsync(string kind, string subject)
    {
        var path = PathFor($"{kind}/{Uri.EscapeDataString(subject)}");
        using var request = new HttpRequestMessage(HttpMethod.Get, Url(path));
        var (status, error, at, _) = await ExchangeAsync(request, Locked(() => _stop.Token));
        lock (_gate)
        {
            _queries.Add(new AppserviceQuery(at, kind, subject, path, request.Headers.Authorization?.ToString(), status, error));
            Progress();
        }
    }

    private string PathFor(string resource) => _options.PushPathStyle == PushPathStyle.Legacy
        ? $"/{resource}?access_token={Uri.EscapeDataString(_registration.HsToken)}"
        : $"/_matrix/app/v1/{resource}";

    private Uri Url(string path) => new(_registration.Url.ToString().TrimEnd('/') + path);

    private async Task<(int? Status, string? Error, DateTimeOffset At, TimeSpan Duration)> ExchangeAsync(HttpRequestMessage request, CancellationToken ct)
    {
        if (_options.PushPathStyle == PushPathStyle.V1)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _registration.HsToken);
        }

        var at = DateTimeOffset.UtcNow;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.EffectiveAppserviceRequestTimeout);
        try
        {
            using var response = await _http.SendAsync(request, timeout.Token);
            await response.Content.ReadAsByteArrayAsync(timeout.Token);
            return ((int)response.StatusCode, null, at, DateTimeOffset.UtcNow - at);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException || ex is OperationCanceledException && !ct.IsCancellationRequested)
        {
            return (null, ex.Message, at, DateTimeOffset.UtcNow - at);
        }
        catch (OperationCanceledException)
        {
            // The connection is dropped as a dying process drops it; the appservice may still be handling the request.
            var how = Locked(() => _gracefulStop) ? "failed: the homeserver shut down (504)" : "abandoned: the homeserver was killed";
            return (null, how, at, DateTimeOffset.UtcNow - at);
        }
    }

    private T Locked<T>(Func<T> read)
    {
        lock (_gate)
        {
            return read();
        }
    }

    private void Wake()
    {
        var previous = _wake;
        _wake = NewSignal();
        previous.TrySetResult();
    }

    private void Progress()
    {
        var previous = _progress;
        _progress = NewSignal();
        previous.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private const long Idle = 0;
    private const long HeldWhileDown = -1;

    /// <param name="Arrival">The push that was in flight when it arrived, <see cref="Idle"/>, or <see cref="HeldWhileDown"/>.</param>
    private sealed record QueuedItem(RoomEvent? Event, JsonObject? Edu, long Arrival);

    private sealed record Transaction(long Id, List<QueuedItem> Items);
}
