using System.Diagnostics;
using System.Runtime.ExceptionServices;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

public enum DrainOutcome
{
    /// <summary>Nothing left to send.</summary>
    Empty,

    /// <summary>The turn ended with actions left; the room queues again behind the others.</summary>
    More,

    /// <summary>Not before <see cref="DrainResult.Until"/>: a per-room back-off, or another process holds the portal.</summary>
    Wait,

    /// <summary>The homeserver does not answer: the room waits for the shared health probe.</summary>
    HomeserverDown,
}

public readonly record struct DrainResult(DrainOutcome Outcome, DateTimeOffset? Until = null);

/// <summary>
/// A portal's outbound event loop: everything one conversation's room receives, in the order it happened. Per drain it
/// <list type="number">
/// <item>takes the portal's lease (one process drives a room at a time; outcomes are recorded under its token);</item>
/// <item>makes sure the room exists: a conversation that predates the bridge gets its room, members and latest
/// messages (<c>Matrix:BackfillLimit</c>, with their original timestamps) queued ahead of its waiting actions; a room
/// that could not be created parks what needs it;</item>
/// <item>looks on the homeserver for what may already be there (after a takeover or restart, and after an attempt
/// whose outcome is unknown), so that nothing is posted twice even when the homeserver forgot its txnIds;</item>
/// <item>sends the rest in order, classifying every failure (<see cref="MatrixFailures"/>).</item>
/// </list>
/// The dispatcher only decides which portals drain when.
/// </summary>
public sealed class Portals(
    ChatDatabase database,
    MatrixActionSender sender,
    PortalLeases leases,
    HomeserverHealth health,
    ConversationService conversations,
    MessageService messages,
    RecordedEventIds recorded,
    MatrixEvents events,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<Portals> logger)
{
    // A drain hands its room back after this many actions, so that rooms waiting for a free slot get their turn.
    private const int ActionsPerTurn = 100;

    // Actions read (with their messages) in one query.
    private const int ReadAhead = 50;

    // Text messages sent but not yet recorded: a crash leaves them for the next holder to find on the homeserver (by
    // the action id each carries), so recording them together is safe; these bound how long "sent" waits. Whatever a
    // read sent is recorded before the next read, so no more than ReadAhead are ever unrecorded: a new holder's first
    // read, the only one it reconciles, covers them all.
    private const int RecordEvery = 32;
    private static readonly TimeSpan MaxRecordDelay = TimeSpan.FromMilliseconds(200);

    public async Task<DrainResult> DrainAsync(Guid conversationId, CancellationToken stoppingToken)
    {
        if (await leases.AcquireAsync(conversationId, stoppingToken) is not { } lease)
        {
            return new DrainResult(DrainOutcome.Wait, await leases.HeldUntilAsync(conversationId, stoppingToken));
        }
        var turn = new DispatchTurn(lease);
        try
        {
            return await SendQueueAsync(turn, stoppingToken);
        }
        catch (PortalLeaseLostException ex)
        {
            logger.LogWarning("{Message} This instance stops sending to its room", ex.Message);
            return new DrainResult(DrainOutcome.Empty);
        }
        finally
        {
            try
            {
                // What the homeserver already has must be recorded even when we are stopping.
                await RecordAsync(turn);
            }
            catch (PortalLeaseLostException)
            {
                logger.LogWarning("Lost the Matrix portal of conversation {ConversationId} before recording what was sent; its new holder finds it on the homeserver", conversationId);
            }
            catch (Exception ex)
            {
                // Not recorded means looked for on the homeserver and not sent again (the lease is taken afresh).
                logger.LogError(ex, "Matrix dispatch for conversation {ConversationId} could not record what it sent; it is looked for on the homeserver before anything is resent", conversationId);
                leases.Forget(conversationId);
            }
        }
    }

    private async Task<DrainResult> SendQueueAsync(DispatchTurn turn, CancellationToken stoppingToken)
    {
        var conversationId = turn.Lease.ConversationId;
        var sent = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            if (sent >= ActionsPerTurn)
            {
                return new DrainResult(DrainOutcome.More);
            }
            List<OutboxAction> actions;
            await using (var connection = await database.OpenAsync(stoppingToken))
            {
                await leases.RenewIfDueAsync(connection, turn.Lease);
                actions = (await connection.QueryAsync<OutboxAction>(
                    """
                    SELECT * FROM matrix_outbox
                     WHERE conversation_id = @conversationId AND status = 'pending'
                     ORDER BY seq, id LIMIT @limit
                    """,
                    new { conversationId, limit = Math.Min(ReadAhead, ActionsPerTurn - sent) })).AsList();
                if (actions.Count == 0)
                {
                    return new DrainResult(DrainOutcome.Empty);
                }
                if (actions[0].NextAttemptAt > time.GetUtcNow())
                {
                    return new DrainResult(DrainOutcome.Wait, actions[0].NextAttemptAt);
                }
                await sender.ReadAheadAsync(connection, turn, actions, stoppingToken);
            }

            if (actions[0].Action != MatrixActions.CreateRoom && await sender.RoomIdAsync(conversationId, stoppingToken) is null)
            {
                if (await PrepareRoomAsync(turn, actions[0], stoppingToken) is { } stop)
                {
                    return stop;
                }
                await RecordAsync(turn);
                continue;
            }

            if (turn.Lease.Fresh || actions.Any(a => a.OutcomeUnknown))
            {
                try
                {
                    await ReconcileAsync(turn, actions, stoppingToken);
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested && ex is not PortalLeaseLostException)
                {
                    // Not knowing what the homeserver has, nothing may be sent: the head waits as if it had failed. A refusal
                    // of the look-up says nothing about the head itself, so it is never parked at once for it.
                    var lookup = ex is MatrixApiException { HomeserverDown: true } || MatrixFailures.Classify(ex) == FailureClass.Transient
                        ? ex
                        : new ActionNotReadyException($"Could not look on the homeserver for what was already sent: {ex.Message}");
                    return Failed(turn, actions[0], lookup) ?? new DrainResult(DrainOutcome.More);
                }
            }

            foreach (var action in actions)
            {
                if (turn.IsDone(action.Id))
                {
                    continue;
                }
                var mayRecordLater = action.Action == MatrixActions.SendMessage && turn.Message(action.MessageId) is { Media: null };
                if (!mayRecordLater)
                {
                    await RecordAsync(turn);
                }
                await EnsureMaySendAsync(turn);
                var stop = await RunAsync(turn, action, stoppingToken);
                sent++;
                if (!mayRecordLater || stop is not null || turn.Unrecorded >= RecordEvery)
                {
                    await RecordAsync(turn);
                }
                else if (turn.Unrecorded >= RecordEvery / 2 || time.GetUtcNow() - turn.OldestUnrecorded >= MaxRecordDelay)
                {
                    RecordWhileSending(turn);
                }
                if (stop is not null)
                {
                    return stop.Value;
                }
                if (stoppingToken.IsCancellationRequested)
                {
                    break;
                }
            }
            await RecordAsync(turn);
            if (actions.Count < ReadAhead)
            {
                // Whatever was recorded since that read woke us with its conversation id: it is drained next.
                return new DrainResult(DrainOutcome.Empty);
            }
        }
        return new DrainResult(DrainOutcome.Empty);
    }

    /// <returns>Null to go on to the next action; otherwise why and until when the room stops.</returns>
    private async Task<DrainResult?> RunAsync(DispatchTurn turn, OutboxAction action, CancellationToken stoppingToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var eventId = await sender.SendAsync(turn, action, stoppingToken);
            MatrixMetrics.SendLatency.WithLabels(action.Action).Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            turn.Done(new ActionOutcome(action.Id, action.Action, "sent", eventId, null, action.NextAttemptAt, false), time.GetUtcNow());
            health.ReportUp();
            return null;
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested && ex is not PortalLeaseLostException)
        {
            return Failed(turn, action, ex);
        }
    }

    /// <summary>The one place an action's failure becomes its fate (see <see cref="FailureClass"/>).</summary>
    private DrainResult? Failed(DispatchTurn turn, OutboxAction action, Exception ex)
    {
        MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
        var settings = options.Value;
        var attempt = action.Attempts + 1;
        var failure = MatrixFailures.Classify(ex);
        // Once an attempt may have reached the homeserver, every later one looks there first.
        var outcomeUnknown = action.OutcomeUnknown || ex is MatrixApiException { OutcomeUnknown: true } || failure == FailureClass.Unknown;
        // A homeserver refusal says all in its message; anything else needs its stack trace.
        var detail = ex is MatrixApiException or ApiException ? null : ex;
        if (failure == FailureClass.Permanent || failure == FailureClass.Unknown && attempt >= settings.MaxAttempts)
        {
            var error = failure == FailureClass.Permanent ? ex.Message : $"Gave up after {attempt} attempts: {ex.Message}";
            logger.LogWarning(detail, "Matrix action {Action} #{Id} of conversation {ConversationId} parked as failed ({Class}): {Error}",
                action.Action, action.Id, action.ConversationId, failure, error);
            turn.Done(new ActionOutcome(action.Id, action.Action, "failed", null, error, action.NextAttemptAt, outcomeUnknown), time.GetUtcNow());
            return null;
        }
        if (ex is MatrixApiException { HomeserverDown: true })
        {
            health.ReportDown(ex.Message);
            turn.Done(new ActionOutcome(action.Id, action.Action, "pending", null, ex.Message, time.UtcNowMicros(), outcomeUnknown), time.GetUtcNow());
            return new DrainResult(DrainOutcome.HomeserverDown);
        }
        var delay = settings.RetryDelay(attempt, (ex as MatrixApiException)?.RetryAfter);
        logger.LogWarning(detail, "Matrix action {Action} #{Id} of conversation {ConversationId} failed ({Class}, attempt {Attempt}), retrying in {Delay}: {Error}",
            action.Action, action.Id, action.ConversationId, failure, attempt, delay, ex.Message);
        var nextAttemptAt = time.UtcNowMicros() + delay;
        turn.Done(new ActionOutcome(action.Id, action.Action, "pending", null, ex.Message, nextAttemptAt, outcomeUnknown), time.GetUtcNow());
        return new DrainResult(DrainOutcome.Wait, nextAttemptAt);
    }

    /// <summary>
    /// Before sending what a previous holder (or an attempt with no answer) may have sent already, asks the room's
    /// recent timeline for the action ids our events carry, and takes what is found as sent.
    /// </summary>
    private async Task ReconcileAsync(DispatchTurn turn, List<OutboxAction> actions, CancellationToken cancellationToken)
    {
        var uncertain = actions.Where(a => (turn.Lease.Fresh || a.OutcomeUnknown) && MatrixActions.PostsEvent(a.Action)).ToList();
        if (uncertain.Count > 0)
        {
            var found = await sender.FindPostedAsync(turn, uncertain, cancellationToken);
            foreach (var action in uncertain)
            {
                if (found.TryGetValue(action.TxnId, out var eventId))
                {
                    sender.Adopt(turn, action, eventId);
                    turn.Done(new ActionOutcome(action.Id, action.Action, "sent", eventId, null, action.NextAttemptAt, false), time.GetUtcNow());
                    MatrixMetrics.FoundOnHomeserver.Inc();
                    logger.LogInformation("Matrix action {Action} #{Id} of conversation {ConversationId} was already on the homeserver as {EventId}; not sent again",
                        action.Action, action.Id, action.ConversationId, eventId);
                }
            }
        }
        if (turn.Lease.Fresh)
        {
            leases.Reconciled(turn.Lease);
            turn.Lease = turn.Lease with { Fresh = false };
        }
    }

    /// <summary>The head action needs a room that does not exist (yet).</summary>
    /// <returns>Null when the queue changed (room creation queued, or the head parked) and should be read again.</returns>
    private async Task<DrainResult?> PrepareRoomAsync(DispatchTurn turn, OutboxAction head, CancellationToken cancellationToken)
    {
        var conversationId = head.ConversationId;
        CreateRoomState? creation;
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            creation = await connection.QuerySingleOrDefaultAsync<CreateRoomState>(
                "SELECT id, status, last_error FROM matrix_outbox WHERE conversation_id = @conversationId AND action = @createRoom ORDER BY id DESC LIMIT 1",
                new { conversationId, createRoom = MatrixActions.CreateRoom });
        }
        switch (creation?.Status)
        {
            case "failed":
                var error = $"The conversation's Matrix room could not be created: {creation.LastError}";
                logger.LogWarning("Matrix action {Action} #{Id} of conversation {ConversationId} parked as failed: {Error}", head.Action, head.Id, conversationId, error);
                turn.Done(new ActionOutcome(head.Id, head.Action, "failed", null, error, head.NextAttemptAt, head.OutcomeUnknown), time.GetUtcNow());
                return null;
            case "pending":
                // Its creation is queued behind something: that cannot normally be, as creation comes first.
                return Failed(turn, head, new ActionNotReadyException($"Conversation {conversationId} has no Matrix room yet."));
            case "sent":
                // Created, and the mapping lost since: creating it again finds the room by its alias and saves the mapping.
                await using (var connection = await database.OpenAsync(cancellationToken))
                await using (var transaction = await connection.BeginTransactionAsync(cancellationToken))
                {
                    await leases.RenewAsync(connection, transaction, turn.Lease);
                    await connection.ExecuteAsync(
                        "UPDATE matrix_outbox SET status = 'pending', next_attempt_at = @now WHERE id = @Id",
                        new { creation.Id, now = time.UtcNowMicros() }, transaction);
                    await transaction.CommitAsync(cancellationToken);
                }
                logger.LogWarning("Conversation {ConversationId} has lost its Matrix room mapping; its room is looked up by its alias again", conversationId);
                return null;
        }

        // Never created: Matrix was switched on after this conversation began. Create its room now, its recent history first.
        var snapshot = await conversations.SnapshotAsync(conversationId, cancellationToken);
        if (snapshot is null)
        {
            return Failed(turn, head, new ApiException(StatusCodes.Status404NotFound, "conversation_not_found", "The conversation no longer exists."));
        }
        var recent = await messages.RecentAsync(conversationId, head.Seq, options.Value.BackfillLimit, cancellationToken);
        Dictionary<Guid, string> onMatrix;
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            onMatrix = await MatrixEvents.EventsOfMessagesAsync(connection, [.. recent.Select(m => m.Id)]);
        }
        // Whatever is known to be on Matrix already (a room whose creation row retention removed) is never posted again.
        var backfill = recent.Where(m => !onMatrix.ContainsKey(m.Id)).ToList();
        var now = time.UtcNowMicros();
        // Seq 0 puts the room's creation ahead of everything; backfilled messages keep their own seqs, which are all
        // older than the waiting head's (their sends carry the messages' own times as the events' timestamps).
        List<LateRow> rows =
        [
            new(conversationId, 0, MatrixActions.CreateRoom, snapshot.CreatedBy, null, OutboxPayloads.Serialize(OutboxPayloads.From(snapshot)),
                MatrixIds.TransactionId(conversationId, 0, MatrixActions.CreateRoom), now),
            .. backfill.Select(m => new LateRow(conversationId, m.Seq, MatrixActions.SendMessage, m.SenderId, m.Id,
                OutboxPayloads.Serialize(new MessagePayload(m.Id)), MatrixIds.TransactionId(conversationId, m.Seq, MatrixActions.SendMessage),
                now)),
        ];
        await using (var connection = await database.OpenAsync(cancellationToken))
        await using (var transaction = await connection.BeginTransactionAsync(cancellationToken))
        {
            await leases.RenewAsync(connection, transaction, turn.Lease);
            await connection.ExecuteAsync(
                """
                INSERT INTO matrix_outbox (conversation_id, seq, action, actor_id, message_id, payload, payload_version, txn_id, status, attempts, next_attempt_at, created_at)
                VALUES (@ConversationId, @Seq, @Action, @ActorId, @MessageId, @Payload, @Version, @TxnId, 'pending', 0, @Now, @Now)
                ON CONFLICT (txn_id) DO NOTHING
                """,
                rows,
                transaction);
            await transaction.CommitAsync(cancellationToken);
        }
        logger.LogInformation("Conversation {ConversationId} began before Matrix was enabled: its room is created now and its {Count} latest messages posted first",
            conversationId, backfill.Count);
        return null;
    }

    /// <summary>
    /// Starts recording what the turn has sent so far while its next text message is sent: a commit between a room's
    /// sends held half of them 3–8 ms (measured against Synapse, 2026-12-02; docs/performance.md, "On the wire").
    /// One recording at a time; what is sent meanwhile waits for the next. A failure stops the room before its next send
    /// (<see cref="EnsureMaySendAsync"/>).
    /// </summary>
    private void RecordWhileSending(DispatchTurn turn)
    {
        if (turn.Recording is { IsCompleted: false })
        {
            return;
        }
        if (turn.Recording is { } done)
        {
            // A failure is noticed before the next send; until then its batch stays with the finished task.
            if (done.Result is not null)
            {
                return;
            }
            turn.Recording = null;
        }
        var (lease, batch) = (turn.Lease, turn.TakeUnrecorded());
        turn.Recording = Task.Run(async () =>
        {
            try
            {
                await RecordBatchAsync(lease, batch);
                return null;
            }
            catch (Exception ex)
            {
                return new FailedRecording(batch, ex);
            }
        });
    }

    /// <summary>
    /// Before each send: a recording that failed stops the room (its outcomes go back to the turn, to be recorded when the
    /// drain ends or looked for on the homeserver later), and the lease must be one this process still counts on, so that
    /// recording in the background never lets a room be sent to by two processes.
    /// </summary>
    private async Task EnsureMaySendAsync(DispatchTurn turn)
    {
        if (turn.Recording is { IsCompleted: true } done && done.Result is { } failed)
        {
            turn.Recording = null;
            turn.Restore(failed.Batch);
            ExceptionDispatchInfo.Throw(failed.Exception);
        }
        if (!leases.Trusted(turn.Lease))
        {
            await RecordAsync(turn);
            await using var connection = await database.OpenAsync(CancellationToken.None);
            await leases.RenewIfDueAsync(connection, turn.Lease);
        }
    }

    /// <summary>Records the turn's outcomes and the event ids they produced in one transaction, under the portal's lease, then lets waiting inbound events apply.</summary>
    private async Task RecordAsync(DispatchTurn turn)
    {
        if (turn.Recording is { } recording)
        {
            turn.Recording = null;
            if (await recording is { } failed)
            {
                turn.Restore(failed.Batch);
            }
        }
        if (turn.Unrecorded == 0)
        {
            return;
        }
        var batch = turn.TakeUnrecorded();
        try
        {
            await RecordBatchAsync(turn.Lease, batch);
        }
        catch
        {
            turn.Restore(batch);
            throw;
        }
    }

    private async Task RecordBatchAsync(PortalLease lease, RecordBatch batch)
    {
        // Recording the outcome must not be abandoned half-way by shutdown: the homeserver already has the events.
        DateTimeOffset renewed;
        await using (var connection = await database.OpenAsync(CancellationToken.None))
        await using (var transaction = await connection.BeginTransactionAsync(CancellationToken.None))
        {
            // One round trip for the lot: the renewal (the fence), the outcomes and the event ids.
            var statements = new StatementBatch(connection, transaction);
            var renewal = leases.Renew(statements, lease);
            // A statement per row: each is a primary-key update with a plan that stays right as the outbox grows, and the
            // batches are small under load (one or two actions per room).
            var now = time.UtcNowMicros();
            statements.Add(
                """
                UPDATE matrix_outbox
                   SET status = @Status, attempts = attempts + 1, matrix_event_id = COALESCE(@EventId, matrix_event_id),
                       last_error = @Error, next_attempt_at = @NextAttemptAt, outcome_unknown = @OutcomeUnknown,
                       sent_at = CASE WHEN @Status = 'sent' THEN @now ELSE sent_at END
                 WHERE id = @Id
                """,
                batch.Outcomes.Select(o => new { o.Status, o.EventId, o.Error, o.NextAttemptAt, o.OutcomeUnknown, now, o.Id }).ToList());
            events.RecordSent(statements, batch.SentEvents);
            renewed = leases.EnsureRenewed(renewal, await statements.ExecuteAsync());
            await transaction.CommitAsync(CancellationToken.None);
        }
        leases.Renewed(lease, renewed);
        foreach (var sent in batch.SentEvents)
        {
            recorded.Recorded(sent.EventId);
        }
        MatrixMetrics.MessagesSent.Inc(batch.Outcomes.Count(o => o.Action == MatrixActions.SendMessage && o.Status == "sent"));
    }

    private sealed record LateRow(
        Guid ConversationId, long Seq, string Action, Guid? ActorId, Guid? MessageId, string Payload, string TxnId, DateTimeOffset Now)
    {
        public int Version => OutboxPayloads.Version;
    }

    private sealed class CreateRoomState
    {
        public long Id { get; init; }
        public string Status { get; init; } = "";
        public string? LastError { get; init; }
    }
}

/// <summary>An outbox row.</summary>
public sealed class OutboxAction
{
    public long Id { get; init; }
    public Guid ConversationId { get; init; }
    public long Seq { get; init; }
    public string Action { get; init; } = "";
    public Guid? ActorId { get; init; }
    public Guid? MessageId { get; init; }
    public string Payload { get; init; } = "";
    public int PayloadVersion { get; init; } = 1;
    public string TxnId { get; init; } = "";
    public int Attempts { get; init; }
    public DateTimeOffset NextAttemptAt { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public string? MatrixEventId { get; init; }
    public bool OutcomeUnknown { get; init; }
}

/// <summary>What the portal records about one action.</summary>
public sealed record ActionOutcome(long Id, string Action, string Status, string? EventId, string? Error, DateTimeOffset NextAttemptAt, bool OutcomeUnknown);

/// <summary>
/// One portal drain: its lease, the messages read ahead for its actions, and what it sent but has not recorded yet.
/// Later actions of the same drain find the event ids here before they are stored.
/// </summary>
public sealed class DispatchTurn(PortalLease lease)
{
    private readonly Dictionary<Guid, MessageDto> _messages = [];
    private readonly Dictionary<Guid, string> _messageEventIds = [];
    private readonly List<ActionOutcome> _outcomes = [];
    private readonly HashSet<long> _done = [];
    private readonly List<EventRow> _sentEvents = [];

    public PortalLease Lease { get; set; } = lease;

    public int Unrecorded => _outcomes.Count;

    /// <summary>The recording started while sending went on (see <c>Portals.RecordWhileSending</c>), if any.</summary>
    internal Task<FailedRecording?>? Recording { get; set; }

    public DateTimeOffset OldestUnrecorded { get; private set; } = DateTimeOffset.MaxValue;

    /// <summary>Messages as they are now, replacing what an earlier read of this turn saw.</summary>
    public void ReadAhead(IEnumerable<MessageDto> messages)
    {
        _messages.Clear();
        foreach (var message in messages)
        {
            _messages[message.Id] = message;
        }
    }

    public MessageDto? Message(Guid? messageId) => messageId is { } id ? _messages.GetValueOrDefault(id) : null;

    /// <summary>The event a message of this turn became, if it was sent in this turn.</summary>
    public string? EventIdOf(Guid messageId) => _messageEventIds.GetValueOrDefault(messageId);

    /// <param name="seq">The message's seq (its send_message action's).</param>
    public void MessageSent(Guid conversationId, Guid messageId, long seq, string eventId)
    {
        _messageEventIds[messageId] = eventId;
        _sentEvents.Add(new EventRow(eventId, conversationId, messageId, seq));
    }

    public void ReactionSent(Guid conversationId, ReactionPayload reaction, string eventId) =>
        _sentEvents.Add(new EventRow(eventId, conversationId, reaction.MessageId, null, reaction.UserId, reaction.Reaction));

    /// <summary>Whether the action already has its outcome in this turn (e.g. found on the homeserver).</summary>
    public bool IsDone(long actionId) => _done.Contains(actionId);

    public void Done(ActionOutcome outcome, DateTimeOffset now)
    {
        if (_outcomes.Count == 0)
        {
            OldestUnrecorded = now;
        }
        _outcomes.Add(outcome);
        _done.Add(outcome.Id);
    }

    /// <summary>The outcomes, and the messages and reactions posted, not recorded yet: they are the caller's to record now.</summary>
    public RecordBatch TakeUnrecorded()
    {
        var batch = new RecordBatch([.. _outcomes], [.. _sentEvents], OldestUnrecorded);
        _outcomes.Clear();
        _sentEvents.Clear();
        OldestUnrecorded = DateTimeOffset.MaxValue;
        return batch;
    }

    /// <summary>A batch that could not be recorded is unrecorded again, ahead of what was sent since.</summary>
    public void Restore(RecordBatch batch)
    {
        _outcomes.InsertRange(0, batch.Outcomes);
        _sentEvents.InsertRange(0, batch.SentEvents);
        OldestUnrecorded = batch.Oldest < OldestUnrecorded ? batch.Oldest : OldestUnrecorded;
    }
}

public sealed record RecordBatch(IReadOnlyList<ActionOutcome> Outcomes, IReadOnlyList<EventRow> SentEvents, DateTimeOffset Oldest);

internal sealed record FailedRecording(RecordBatch Batch, Exception Exception);

/// <summary>The action depends on something that is not there yet (e.g. its room); try again later.</summary>
public sealed class ActionNotReadyException(string message) : Exception(message);
