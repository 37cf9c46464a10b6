using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Appservice mode: reads what Matrix users did from each room's timeline, with pushes as the news that a room moved,
/// so that what Synapse never pushes still arrives, and in its place.
/// <para>
/// Synapse 1.67 (<c>synapse/handlers/appservice.py</c>) hands new events to the appservice scheduler's queue in memory,
/// records its stream position past them, and stores them as a transaction only after the push in flight is answered.
/// A stop or crash in between drops them for good (synapse#11637, open upstream): under load, nearly every restart.
/// They are in the room's timeline all the same. So a push that carries anything from someone other than the bridge
/// makes its room be read (<c>/messages</c> forwards, as the bot) from where the last read stopped, and what is found is
/// applied in timeline order, before the pushed events. Then the pushed events themselves, which the read normally
/// holds already: a federated event placed earlier in the room than the read position is still applied. The position
/// is saved per room (<c>matrix_room_timelines</c>); a room read for the first time starts with its latest events.
/// </para>
/// <para>
/// A drop followed by silence in the room has no later push to bring it: rooms that had pushes are read once more
/// <see cref="MatrixOptions.TimelineSweepInterval"/> after the last one. A dropped event in a room that had no push near
/// the stop, and then none after, waits for the room's next event (and arrives before it).
/// </para>
/// <para>
/// Reads and applies are one at a time per room (and every event is applied at most once, by <see cref="MatrixEvents"/>),
/// so a push retried while its first attempt still runs reads nothing new.
/// </para>
/// </summary>
public sealed class RoomTimelines(
    ChatDatabase database,
    MatrixApi api,
    MatrixInbound inbound,
    MatrixIds ids,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<RoomTimelines> logger) : BackgroundService
{
    private const int PageSize = 500;

    // Where a room read for the first time starts: its latest events, which cover what its first push carried.
    private const int FirstReadSize = 100;

    private readonly ConcurrentDictionary<string, SemaphoreSlim> _roomGates = new(StringComparer.Ordinal);

    // Rooms pushed to, and when to read them again for what a stop of the homeserver dropped behind that push.
    private readonly ConcurrentDictionary<string, DateTimeOffset> _sweepDue = new(StringComparer.Ordinal);

    private bool Enabled => options.Value is { Mode: MatrixMode.Appservice, ReadRoomTimelines: true };

    /// <summary>Applies a push: each room it names read from its timeline, then the ephemeral events.</summary>
    /// <exception cref="Exception">Only transient failures escape: the push must be retried as a whole.</exception>
    public async Task ApplyPushAsync(IReadOnlyList<JsonObject> events, IReadOnlyList<JsonObject> ephemeral, CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            await inbound.HandleBatchAsync(events, ephemeral, cancellationToken);
            return;
        }
        var batch = inbound.NewBatch();
        Pushed(events);
        foreach (var room in events.GroupBy(e => Json.String(e["room_id"])))
        {
            if (room.Key is null)
            {
                // Malformed: the inbound path names and counts it.
                foreach (var evt in room)
                {
                    await inbound.HandleAsync(evt, batch, cancellationToken);
                }
            }
            else if (room.Any(e => Json.String(e["sender"]) is not { } sender || !ids.IsEcho(sender)))
            {
                await ReadAsync(room.Key, room.ToList(), batch, cancellationToken);
            }
        }
        await inbound.HandleBatchAsync([], ephemeral, cancellationToken);
    }

    /// <summary>A push that needs no work now (only the bridge's own events) still makes its rooms due for a sweep.</summary>
    public void Pushed(IEnumerable<JsonObject> events)
    {
        if (!Enabled)
        {
            return;
        }
        var due = time.GetUtcNow() + options.Value.TimelineSweepInterval;
        foreach (var roomId in events.Select(e => Json.String(e["room_id"])).OfType<string>().Distinct())
        {
            _sweepDue[roomId] = due;
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!Enabled)
        {
            return;
        }
        var tick = TimeSpan.FromTicks(Math.Max(options.Value.TimelineSweepInterval.Ticks / 4, TimeSpan.FromMilliseconds(50).Ticks));
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(tick, time, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            foreach (var (roomId, due) in _sweepDue)
            {
                if (due > time.GetUtcNow())
                {
                    continue;
                }
                try
                {
                    await ReadAsync(roomId, [], inbound.NewBatch(), stoppingToken);
                    // A push that came during the read set a new time; only the one read for leaves.
                    _sweepDue.TryRemove(KeyValuePair.Create(roomId, due));
                }
                catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception ex)
                {
                    // Stays due: a later tick tries again. A homeserver that does not answer fails every room alike.
                    MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
                    logger.LogWarning(ex is MatrixApiException ? null : ex, "Reading room {RoomId} after its last push failed: {Error}", roomId, ex.Message);
                    if (ex is MatrixApiException { HomeserverDown: true })
                    {
                        break;
                    }
                }
            }
        }
    }

    private async Task ReadAsync(string roomId, IReadOnlyList<JsonObject> pushed, InboundBatch batch, CancellationToken cancellationToken)
    {
        var gate = _roomGates.GetOrAdd(roomId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var read = new HashSet<string>(StringComparer.Ordinal);
            if (await MappedAsync(roomId, cancellationToken))
            {
                var token = await TokenAsync(roomId, cancellationToken);
                try
                {
                    var next = await ReadFromAsync(roomId, token, pushed, read, batch, cancellationToken);
                    if (next is not null && next != token)
                    {
                        await SaveTokenAsync(roomId, next, cancellationToken);
                    }
                }
                catch (MatrixApiException ex) when (ex.Class == FailureClass.Permanent)
                {
                    // The bot cannot read the room (it was kicked, or the room is gone): what was pushed is all there is.
                    MatrixMetrics.Errors.WithLabels("timeline_unreadable").Inc();
                    logger.LogWarning("Cannot read the timeline of {RoomId} ({Error}); applying what the homeserver pushed only", roomId, ex.Message);
                }
            }
            // An unmapped room has nothing to read: the inbound path decides (a room being created waits for its mapping).
            foreach (var evt in pushed.Where(e => Json.String(e["event_id"]) is not { } id || !read.Contains(id)))
            {
                await inbound.HandleAsync(evt, batch, cancellationToken);
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>Reads and applies the room's events after <paramref name="token"/>; returns where the next read starts.</summary>
    private async Task<string?> ReadFromAsync(
        string roomId, string? token, IReadOnlyList<JsonObject> pushed, HashSet<string> read, InboundBatch batch, CancellationToken cancellationToken)
    {
        var path = $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/messages";
        if (token is null)
        {
            // First read of this room (a bridge upgraded to reading timelines, or a new room): no position yet. Its latest
            // events, oldest first; "start" of a backwards read without "from" is the room's position now.
            var latest = await api.SendAsync(HttpMethod.Get, $"{path}?dir=b&limit={FirstReadSize}", null, null, cancellationToken);
            await ApplyAsync((latest?["chunk"] as JsonArray ?? []).OfType<JsonObject>().Reverse(), read, batch, cancellationToken);
            token = Json.String(latest?["start"]);
            if (token is null)
            {
                return null;
            }
        }
        var waitingFor = pushed.Select(e => Json.String(e["event_id"])).OfType<string>().ToHashSet(StringComparer.Ordinal);
        waitingFor.ExceptWith(read);
        while (true)
        {
            var page = await api.SendAsync(HttpMethod.Get, $"{path}?dir=f&limit={PageSize}&from={Uri.EscapeDataString(token)}", null, null, cancellationToken);
            var chunk = (page?["chunk"] as JsonArray ?? []).OfType<JsonObject>().ToList();
            if (chunk.Count == 0)
            {
                return token;
            }
            await ApplyAsync(chunk, read, batch, cancellationToken);
            token = Json.String(page?["end"]) ?? token;
            waitingFor.ExceptWith(read);
            // Read at least up to what was pushed (nothing before it may be missed); a sweep reads to the end.
            if (chunk.Count < PageSize && (pushed.Count == 0 || waitingFor.Count == 0))
            {
                return token;
            }
        }
    }

    private async Task ApplyAsync(IEnumerable<JsonObject> events, HashSet<string> read, InboundBatch batch, CancellationToken cancellationToken)
    {
        foreach (var evt in events)
        {
            await inbound.HandleAsync(evt, batch, cancellationToken);
            if (Json.String(evt["event_id"]) is { } eventId)
            {
                read.Add(eventId);
            }
        }
    }

    private async Task<bool> MappedAsync(string roomId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<int>("SELECT 1 FROM matrix_room_mapping WHERE matrix_room_id = @roomId", new { roomId }) == 1;
    }

    private async Task<string?> TokenAsync(string roomId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>("SELECT next_token FROM matrix_room_timelines WHERE matrix_room_id = @roomId", new { roomId });
    }

    private async Task SaveTokenAsync(string roomId, string nextToken, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            """
            INSERT INTO matrix_room_timelines (matrix_room_id, next_token, updated_at) VALUES (@roomId, @nextToken, @now)
            ON CONFLICT (matrix_room_id) DO UPDATE SET next_token = @nextToken, updated_at = @now
            """,
            new { roomId, nextToken, now = time.UtcNowMicros() });
    }
}
