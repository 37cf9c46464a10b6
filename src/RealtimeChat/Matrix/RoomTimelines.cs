using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Appservice mode: gets back what Synapse never pushes, from each room's timeline, and applies it in its place.
/// <para>
/// Synapse 1.67 (<c>synapse/handlers/appservice.py</c>) hands new events to the appservice scheduler's queue in memory,
/// records its stream position past them, and stores them as a transaction only after the push in flight is answered.
/// A stop or crash in between drops them for good (synapse#11637, open upstream): under load, nearly every restart.
/// They are in the room's timeline all the same, after the last event pushed from that room. Only a restart drops
/// them, and a restart takes seconds (stopping, starting Python, opening the store), so pushes pause for at least
/// that long. After every pause of <see cref="MatrixOptions.TimelineReadAfterPause"/> (1 s; 0 reads before every push;
/// counted from the later of the last push and our answer to it), or a push the homeserver hung up on, each room's
/// first push has the room read first: <c>/messages</c> backwards from now (as the bot) down to the last event handled
/// from it, and what was not pushed is applied in timeline order before what was. That holds for a push of nothing but
/// the bridge's own messages too: what Synapse dropped before them is behind them in the room. Between pauses pushes
/// are applied as they come: a busy bridge reads nothing.
/// </para>
/// <para>
/// A drop followed by silence in the room brings no push at all: rooms that had pushes are read the same way once more
/// <see cref="MatrixOptions.TimelineSweepInterval"/> after their last one. A dropped event in a room that had no push
/// near the stop, and then none after, waits for the room's next event (and arrives before it): the bot cannot ask
/// which rooms changed, as Synapse 1.67 refuses <c>/sync</c> to an appservice's own user. Which event was handled
/// last is kept in memory; the first read of a room after this service starts goes back to the newest event from someone
/// other than the bridge that the chat holds instead.
/// </para>
/// <para>
/// A push's rooms are applied in parallel, each room one push or read at a time, and every event at most once
/// (<see cref="MatrixEvents"/>), so a push retried while its first attempt still runs changes nothing.
/// </para>
/// </summary>
public sealed class RoomTimelines(
    ChatDatabase database,
    MatrixApi api,
    MatrixInbound inbound,
    MatrixEvents matrixEvents,
    MatrixIds ids,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<RoomTimelines> logger) : BackgroundService
{
    // After the first page (what was pushed and a few more, which normally reaches the last event handled: Synapse's
    // cost grows with the events it filters for each page), pages grow.
    private static readonly int[] LaterPageSizes = [100, 400];

    // How far back a read goes looking for where to stop. Beyond it the read is not applied: what came before it in
    // the room is unknown, and the pushes bring the rest in order.
    private const int MaxReadBack = 1000;

    private readonly KeyedGates<string> _roomGates = new(StringComparer.Ordinal);

    // The last event handled from each room (pushed or read): where a read stops. Kept for every room pushed since start
    // (a few hundred bytes each): without it the room's next read would page back to the newest event from someone other
    // than the bridge that the chat holds, up to MaxReadBack events in a room where only the app talks.
    private readonly ConcurrentDictionary<string, string> _lastEvent = new(StringComparer.Ordinal);

    // Rooms pushed to, and when to read them again for what a stop of the homeserver dropped behind that push.
    private readonly ConcurrentDictionary<string, DateTimeOffset> _sweepDue = new(StringComparer.Ordinal);

    // Pauses in pushes counted since start; a room read after the current one is not read again until the next.
    // Marks for earlier pauses mean nothing and are dropped at the next sweep tick.
    private readonly ConcurrentDictionary<string, long> _readAfterPause = new(StringComparer.Ordinal);
    private long _pauses;
    private long _marksPrunedAt;
    private long _lastPushOrAnswer = long.MinValue;

    private bool Enabled => options.Value is { Mode: MatrixMode.Appservice, ReadRoomTimelines: true };

    /// <summary>Applies a push: rooms in parallel, each read first when its push is its first since a pause, then the ephemeral events.</summary>
    /// <exception cref="Exception">Only transient failures escape: the push must be retried as a whole.</exception>
    public async Task ApplyPushAsync(IReadOnlyList<JsonObject> events, IReadOnlyList<JsonObject> ephemeral, CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            await inbound.HandleBatchAsync(events, ephemeral, cancellationToken);
            return;
        }
        var (pause, before) = Arrived(events);
        try
        {
            var batch = inbound.NewBatch();
            await Task.WhenAll(events.GroupBy(e => Json.String(e["room_id"])).Select(async room =>
            {
                if (room.Key is null)
                {
                    // Malformed: the inbound path names and counts it.
                    foreach (var evt in room)
                    {
                        await inbound.HandleAsync(evt, batch, cancellationToken);
                    }
                    return;
                }
                await ApplyRoomAsync(room.Key, [.. room], before.GetValueOrDefault(room.Key), pause, batch, cancellationToken);
                Handled(room.Key, room);
            }));
            await inbound.HandleBatchAsync([], ephemeral, cancellationToken);
        }
        finally
        {
            Answered(cancellationToken.IsCancellationRequested);
        }
    }

    // Only what was handled marks where a later read may stop: a push that failed (or is still running when the
    // homeserver sends it again) must be read again.
    private void Handled(string roomId, IEnumerable<JsonObject> events)
    {
        if (events.Select(e => Json.String(e["event_id"])).LastOrDefault(id => id is not null) is { } last)
        {
            _lastEvent[roomId] = last;
        }
    }

    private bool ReadSince(string roomId, long pause) => _readAfterPause.TryGetValue(roomId, out var read) && read >= pause;

    private void MarkRead(string roomId, long pause) => _readAfterPause.AddOrUpdate(roomId, pause, (_, earlier) => Math.Max(earlier, pause));

    // Synapse sends its next push as soon as the last one is answered, so the pause that counts runs from whichever came
    // last, a push or our answer: a push that took us long to handle is no pause. Returns the pause this push comes
    // after and, for each of its rooms, the event handled last before it.
    private (long Pause, Dictionary<string, string> LastBefore) Arrived(IEnumerable<JsonObject> events)
    {
        var now = time.GetTimestamp();
        var last = Interlocked.Exchange(ref _lastPushOrAnswer, now);
        if (last == long.MinValue || time.GetElapsedTime(last, now) >= options.Value.TimelineReadAfterPause)
        {
            Interlocked.Increment(ref _pauses);
        }
        var due = time.GetUtcNow() + options.Value.TimelineSweepInterval;
        var before = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var roomId in events.Select(e => Json.String(e["room_id"])).OfType<string>().Distinct())
        {
            if (_lastEvent.TryGetValue(roomId, out var previous))
            {
                before[roomId] = previous;
            }
            _sweepDue[roomId] = due;
        }
        return (Interlocked.Read(ref _pauses), before);
    }

    private void Answered(bool aborted)
    {
        Interlocked.Exchange(ref _lastPushOrAnswer, time.GetTimestamp());
        if (aborted)
        {
            // The homeserver hung up before our answer: it stopped (or timed the push out and will send it again).
            // Whatever comes next comes after a pause we could not see.
            Interlocked.Increment(ref _pauses);
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
            ForgetMarksOfEarlierPauses();
            foreach (var (roomId, due) in _sweepDue)
            {
                if (due > time.GetUtcNow())
                {
                    continue;
                }
                try
                {
                    MatrixMetrics.TimelineReads.WithLabels("sweep").Inc();
                    var pause = Interlocked.Read(ref _pauses);
                    await ReadAsync(roomId, [], _lastEvent.GetValueOrDefault(roomId), inbound.NewBatch(), stoppingToken);
                    MarkRead(roomId, pause);
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

    private void ForgetMarksOfEarlierPauses()
    {
        var pause = Interlocked.Read(ref _pauses);
        if (pause == _marksPrunedAt)
        {
            return;
        }
        foreach (var (roomId, read) in _readAfterPause)
        {
            if (read < pause)
            {
                // Only that mark: a room read again meanwhile keeps its newer one. A push still running from before the
                // current pause then reads its room once more, which costs a read and changes nothing.
                _readAfterPause.TryRemove(KeyValuePair.Create(roomId, read));
            }
        }
        _marksPrunedAt = pause;
    }

    private async Task ApplyRoomAsync(
        string roomId, IReadOnlyList<JsonObject> pushed, string? lastBefore, long pause, InboundBatch batch, CancellationToken cancellationToken)
    {
        if (ReadSince(roomId, pause))
        {
            using (await _roomGates.EnterAsync(roomId, cancellationToken))
            {
                foreach (var evt in pushed)
                {
                    await inbound.HandleAsync(evt, batch, cancellationToken);
                }
            }
            return;
        }
        MatrixMetrics.TimelineReads.WithLabels("pause").Inc();
        await ReadAsync(roomId, pushed, lastBefore, batch, cancellationToken);
        MarkRead(roomId, pause);
    }

    /// <summary>
    /// Reads the room back from now to <paramref name="lastBefore"/> (the event pushed last before; null: its latest
    /// events) and applies, oldest first, what it finds after that event, then whatever of <paramref name="pushed"/> the
    /// read did not hold.
    /// </summary>
    private async Task ReadAsync(string roomId, IReadOnlyList<JsonObject> pushed, string? lastBefore, InboundBatch batch, CancellationToken cancellationToken)
    {
        using (await _roomGates.EnterAsync(roomId, cancellationToken))
        {
            var pushedIds = pushed.Select(e => Json.String(e["event_id"])).OfType<string>().ToHashSet(StringComparer.Ordinal);
            var read = new HashSet<string>(StringComparer.Ordinal);
            // An unmapped room has nothing to read: the inbound path decides (a room being created waits for its mapping).
            var events = await MappedAsync(roomId, cancellationToken) ? await TryReadBackAsync(roomId, lastBefore, pushed.Count + 4, cancellationToken) : [];
            foreach (var evt in events)
            {
                var eventId = Json.String(evt["event_id"]);
                if (await inbound.HandleAsync(evt, batch, cancellationToken) && (eventId is null || !pushedIds.Contains(eventId)))
                {
                    // New to the chat and not in this push: the homeserver dropped it, or a later push would bring it.
                    MatrixMetrics.TimelineEvents.Inc();
                    logger.LogInformation("Matrix event {EventId} in {RoomId} was applied from the room's timeline before any push brought it", eventId, roomId);
                }
                if (eventId is not null)
                {
                    read.Add(eventId);
                    _lastEvent[roomId] = eventId;
                }
            }
            foreach (var evt in pushed.Where(e => Json.String(e["event_id"]) is not { } id || !read.Contains(id)))
            {
                await inbound.HandleAsync(evt, batch, cancellationToken);
            }
        }
    }

    /// <summary>
    /// <see cref="ReadBackAsync"/>, or nothing when the room cannot be read: reading is a remedy for what a restart
    /// dropped, and must not hold up what was pushed. The homeserver pushes one transaction at a time, so a push answered
    /// 500 because one room cannot be read would stop every room's events for as long as that room stays unreadable. It
    /// can for good: Synapse 1.67 answers <c>/messages</c> 500 for a room holding an edit whose <c>m.new_content</c> is
    /// not an object (its <c>_apply_edit</c> fails), an edit it accepts from any client; and the bot may have been kicked.
    /// Only a homeserver that does not answer at all fails the push (it is retried once the homeserver is back).
    /// </summary>
    private async Task<List<JsonObject>> TryReadBackAsync(string roomId, string? lastBefore, int firstPage, CancellationToken cancellationToken)
    {
        try
        {
            return await ReadBackAsync(roomId, lastBefore, firstPage, cancellationToken);
        }
        catch (MatrixApiException ex) when (!ex.HomeserverDown && !cancellationToken.IsCancellationRequested)
        {
            MatrixMetrics.Errors.WithLabels("timeline_unreadable").Inc();
            logger.LogWarning("Cannot read the timeline of {RoomId} ({Error}); applying what the homeserver pushed only", roomId, ex.Message);
            return [];
        }
    }

    private async Task<bool> MappedAsync(string roomId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await MatrixActionSender.ConversationOfRoomAsync(connection, roomId) is not null;
    }

    // The bridge records what it posts when it posts it, whatever the inbound path has seen: only someone else's held event
    // shows how far the inbound path came.
    private bool IsOwn(JsonObject evt) => Json.String(evt["sender"]) is { } sender && ids.IsEcho(sender);

    /// <summary>
    /// The room's events after <paramref name="lastBefore"/>, oldest first; with none (this service started since the room
    /// was last handled), after the newest event from someone other than the bridge that the chat holds. Empty when that
    /// is not found within <see cref="MaxReadBack"/> events; the whole room when its beginning is reached first.
    /// </summary>
    private async Task<List<JsonObject>> ReadBackAsync(string roomId, string? lastBefore, int firstPage, CancellationToken cancellationToken)
    {
        var path = $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/messages?dir=b";
        var newestFirst = new List<JsonObject>();
        string? from = null;
        for (var page = 0; ; page++)
        {
            var limit = page == 0 ? firstPage : LaterPageSizes[Math.Min(page - 1, LaterPageSizes.Length - 1)];
            var answer = await api.SendAsync(HttpMethod.Get, $"{path}&limit={limit}" + (from is null ? "" : $"&from={Uri.EscapeDataString(from)}"), null, null, cancellationToken);
            var chunk = (answer?["chunk"] as JsonArray ?? []).OfType<JsonObject>().ToList();
            var held = lastBefore is null
                ? await matrixEvents.HeldAsync([.. chunk.Select(e => Json.String(e["event_id"])).OfType<string>()], cancellationToken)
                : null;
            foreach (var evt in chunk)
            {
                if (Json.String(evt["event_id"]) is { } eventId && (lastBefore is null ? held!.Contains(eventId) && !IsOwn(evt) : eventId == lastBefore))
                {
                    newestFirst.Reverse();
                    return newestFirst;
                }
                newestFirst.Add(evt);
            }
            from = Json.String(answer?["end"]);
            // A short page is not the end (Synapse leaves out what the reader may not see); an empty one, or no "end", is.
            if (chunk.Count == 0 || from is null)
            {
                // The room's beginning: all of it was read.
                newestFirst.Reverse();
                return newestFirst;
            }
            if (newestFirst.Count >= MaxReadBack)
            {
                logger.LogWarning("Reading {RoomId} back {Count} events did not reach the last event handled from it; applying only what was pushed",
                    roomId, newestFirst.Count);
                // The next read stops here rather than paging through the same events again.
                if (Json.String(newestFirst[0]["event_id"]) is { } newest)
                {
                    _lastEvent[roomId] = newest;
                }
                return [];
            }
        }
    }
}
