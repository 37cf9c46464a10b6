using System.Collections.Concurrent;
using System.Diagnostics;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Messages;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Sends the outbox to the homeserver: per conversation strictly in the order the actions were recorded, several
/// conversations at once, never in a chat request. A failing homeserver delays only its room's queue (with back-off
/// honouring retry_after_ms / Retry-After); an action that can never succeed is parked as failed so the room moves on.
/// </summary>
public sealed class MatrixDispatcher(
    ChatDatabase database,
    MatrixActionSender sender,
    RecordedEventIds recorded,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<MatrixDispatcher> logger) : BackgroundService
{
    // A drain hands its room back after this many actions, so that rooms waiting for a free slot get their turn.
    private const int ActionsPerTurn = 100;

    // Actions read (with their messages) in one query.
    private const int ReadAhead = 50;

    // Text messages sent but not yet recorded: a crash resends them with the same txnId, which the homeserver answers
    // with the event it already has, so recording them together is safe; these bound how long "sent" waits.
    private const int RecordEvery = 32;
    private static readonly TimeSpan MaxRecordDelay = TimeSpan.FromMilliseconds(200);

    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly ConcurrentDictionary<Guid, Task> _inFlight = new();
    private readonly Lock _dueLock = new();
    // Conversations with actions to send, in the order they became due; an entry in flight stays until its drain ends.
    private readonly List<Guid> _due = [];
    private readonly HashSet<Guid> _dueSet = [];
    // Conversations backing off: their wake-ups are ignored until the outbox query finds them due again.
    private readonly ConcurrentDictionary<Guid, DateTimeOffset> _heldBack = new();
    private DateTimeOffset _nextRescan;
    private DateTimeOffset _nextRetentionSweep;

    /// <summary>An action of this conversation was recorded: no need to look in the outbox to know it is due.</summary>
    public void Wake(Guid conversationId)
    {
        if (!_heldBack.IsEmpty && _heldBack.TryGetValue(conversationId, out var until))
        {
            if (until > time.GetUtcNow())
            {
                return;
            }
            _heldBack.TryRemove(conversationId, out _);
        }
        MarkDue(conversationId);
        Signal();
    }

    private void MarkDue(Guid conversationId)
    {
        lock (_dueLock)
        {
            if (_dueSet.Add(conversationId))
            {
                _due.Add(conversationId);
            }
        }
    }

    private void Signal()
    {
        if (_wake.CurrentCount == 0)
        {
            try
            {
                _wake.Release();
            }
            catch (SemaphoreFullException)
            {
                // Someone else woke it first.
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        logger.LogInformation("Matrix dispatcher started ({Mode} mode, {Homeserver}, up to {Rooms} rooms in flight)",
            settings.Mode, settings.HomeserverUrl, settings.MaxRoomsInFlight);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                // Wake-ups name their conversation; the outbox is only searched at start and on the poll interval (for
                // rooms whose back-off ended, drains that stopped on an error, other writers), as are the gauges.
                if (time.GetUtcNow() >= _nextRescan)
                {
                    _nextRescan = time.GetUtcNow() + settings.PollInterval;
                    foreach (var conversationId in await DueConversationsAsync(settings.MaxRoomsInFlight + _inFlight.Count, stoppingToken))
                    {
                        MarkDue(conversationId);
                    }
                    await RecordBacklogAsync(stoppingToken);
                }
                StartDrains(settings.MaxRoomsInFlight, stoppingToken);
                if (time.GetUtcNow() >= _nextRetentionSweep)
                {
                    await ForgetOldRowsAsync(stoppingToken);
                    _nextRetentionSweep = time.GetUtcNow() + TimeSpan.FromHours(1);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                // The database itself is unavailable; chat requests fail on their own, we just try again.
                logger.LogError(ex, "Matrix dispatcher could not read the outbox");
            }

            try
            {
                var untilRescan = _nextRescan - time.GetUtcNow();
                await _wake.WaitAsync(untilRescan > TimeSpan.Zero ? untilRescan : TimeSpan.Zero, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        await Task.WhenAll(_inFlight.Values);
    }

    private void StartDrains(int maxRoomsInFlight, CancellationToken stoppingToken)
    {
        var now = time.GetUtcNow();
        lock (_dueLock)
        {
            for (var i = 0; i < _due.Count && _inFlight.Count < maxRoomsInFlight;)
            {
                var conversationId = _due[i];
                if (_inFlight.ContainsKey(conversationId))
                {
                    // Woken while draining: looked at again when that drain ends, in case it read before the change.
                    i++;
                    continue;
                }
                _due.RemoveAt(i);
                _dueSet.Remove(conversationId);
                if (_heldBack.TryGetValue(conversationId, out var until))
                {
                    if (until > now)
                    {
                        continue;
                    }
                    _heldBack.TryRemove(conversationId, out _);
                }
                // Registered before it starts: a drain that finished first would otherwise leave a stale entry behind
                // and its conversation would never be dispatched again.
                var drain = new Task<Task>(() => DrainAsync(conversationId, stoppingToken));
                if (_inFlight.TryAdd(conversationId, drain.Unwrap()))
                {
                    drain.Start(TaskScheduler.Default);
                }
            }
        }
    }

    private async Task<List<Guid>> DueConversationsAsync(int limit, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        // The head (oldest pending action) of each conversation's queue decides whether the conversation is due, and only
        // the head can be waiting for a retry (an action is retried only at the head, and its queue stops behind it), so
        // the latest next_attempt_at of a queue is its head's. One pass over the pending index, no join: joining the
        // heads back to the outbox let PostgreSQL walk the primary key through every sent row kept for retention to
        // satisfy "ORDER BY id LIMIT" (3 ms per poll at 20,000 rows in the bench).
        return (await connection.QueryAsync<Guid>(
            """
            SELECT conversation_id
              FROM matrix_outbox
             WHERE status = 'pending'
             GROUP BY conversation_id
            HAVING MAX(next_attempt_at) <= @now
             ORDER BY MIN(id)
             LIMIT @limit
            """,
            new { now = time.UtcNowMicros(), limit })).AsList();
    }

    private async Task DrainAsync(Guid conversationId, CancellationToken stoppingToken)
    {
        var turn = new DispatchTurn();
        var outcome = DrainOutcome.Empty;
        try
        {
            outcome = await SendQueueAsync(conversationId, turn, stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Matrix dispatch for conversation {ConversationId} stopped; it is retried on the next poll", conversationId);
        }
        finally
        {
            try
            {
                // What the homeserver already has must be recorded even when we are stopping.
                await RecordAsync(turn);
            }
            catch (Exception ex)
            {
                // Not recorded means sent again later with the same txnIds, which the homeserver deduplicates.
                logger.LogError(ex, "Matrix dispatch for conversation {ConversationId} could not record what it sent; it is resent on the next poll", conversationId);
            }
            _inFlight.TryRemove(conversationId, out _);
            if (outcome == DrainOutcome.More)
            {
                MarkDue(conversationId);
            }
            Signal();
        }
    }

    private enum DrainOutcome
    {
        Empty,
        More,
        HeldBack,
    }

    private async Task<DrainOutcome> SendQueueAsync(Guid conversationId, DispatchTurn turn, CancellationToken stoppingToken)
    {
        var sent = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            if (sent >= ActionsPerTurn)
            {
                return DrainOutcome.More;
            }
            List<OutboxAction> actions;
            await using (var connection = await database.OpenAsync(stoppingToken))
            {
                actions = (await connection.QueryAsync<OutboxAction>(
                    """
                    SELECT * FROM matrix_outbox
                     WHERE conversation_id = @conversationId AND status = 'pending'
                     ORDER BY id LIMIT @limit
                    """,
                    new { conversationId, limit = Math.Min(ReadAhead, ActionsPerTurn - sent) })).AsList();
                if (actions.Count == 0)
                {
                    return DrainOutcome.Empty;
                }
                if (actions[0].NextAttemptAt > time.GetUtcNow())
                {
                    _heldBack[conversationId] = actions[0].NextAttemptAt;
                    return DrainOutcome.HeldBack;
                }
                await sender.ReadAheadAsync(connection, turn, actions, stoppingToken);
            }
            foreach (var action in actions)
            {
                var mayRecordLater = action.Action == MatrixActions.SendMessage && turn.Message(action.MessageId) is { Media: null };
                if (!mayRecordLater)
                {
                    await RecordAsync(turn);
                }
                var goOn = await RunAsync(turn, action, stoppingToken);
                sent++;
                if (!mayRecordLater || !goOn || turn.Unrecorded >= RecordEvery || time.GetUtcNow() - turn.OldestUnrecorded >= MaxRecordDelay)
                {
                    await RecordAsync(turn);
                }
                if (!goOn)
                {
                    return DrainOutcome.HeldBack;
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
                return DrainOutcome.Empty;
            }
        }
        return DrainOutcome.Empty;
    }

    /// <returns>Whether the queue may go on to its next action.</returns>
    private async Task<bool> RunAsync(DispatchTurn turn, OutboxAction action, CancellationToken stoppingToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var eventId = await sender.SendAsync(turn, action, stoppingToken);
            MatrixMetrics.SendLatency.WithLabels(action.Action).Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            turn.Done(new ActionOutcome(action.Id, action.Action, "sent", eventId, null, action.NextAttemptAt), time.GetUtcNow());
            return true;
        }
        catch (MatrixApiException ex) when (ex.Class == FailureClass.Permanent)
        {
            MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
            logger.LogWarning("Matrix action {Action} #{Id} of conversation {ConversationId} parked as failed: {Error}",
                action.Action, action.Id, action.ConversationId, ex.Message);
            turn.Done(new ActionOutcome(action.Id, action.Action, "failed", null, ex.Message, action.NextAttemptAt), time.GetUtcNow());
            return true;
        }
        catch (Exception ex) when (ex is MatrixApiException or ActionNotReadyException && !stoppingToken.IsCancellationRequested)
        {
            MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
            var delay = options.Value.RetryDelay(action.Attempts + 1, (ex as MatrixApiException)?.RetryAfter);
            logger.LogWarning("Matrix action {Action} #{Id} of conversation {ConversationId} failed (attempt {Attempt}), retrying in {Delay}: {Error}",
                action.Action, action.Id, action.ConversationId, action.Attempts + 1, delay, ex.Message);
            var nextAttemptAt = time.UtcNowMicros() + delay;
            turn.Done(new ActionOutcome(action.Id, action.Action, "pending", null, ex.Message, nextAttemptAt), time.GetUtcNow());
            _heldBack[action.ConversationId] = nextAttemptAt;
            return false;
        }
    }

    /// <summary>Records the turn's outcomes and the event ids they produced in one transaction, then lets waiting inbound events apply.</summary>
    private async Task RecordAsync(DispatchTurn turn)
    {
        if (turn.Unrecorded == 0)
        {
            return;
        }
        // Recording the outcome must not be abandoned half-way by shutdown: the homeserver already has the events.
        await using (var connection = await database.OpenAsync(CancellationToken.None))
        await using (var transaction = await connection.BeginTransactionAsync(CancellationToken.None))
        {
            // A statement per row: each is a primary-key update with a plan that stays right as the outbox grows, and the
            // batches are small under load (one or two actions per room).
            var now = time.UtcNowMicros();
            await connection.ExecuteAsync(
                """
                UPDATE matrix_outbox
                   SET status = @Status, attempts = attempts + 1, matrix_event_id = COALESCE(@EventId, matrix_event_id),
                       last_error = @Error, next_attempt_at = @NextAttemptAt, sent_at = CASE WHEN @Status = 'sent' THEN @now ELSE sent_at END
                 WHERE id = @Id
                """,
                turn.Outcomes.Select(o => new { o.Status, o.EventId, o.Error, o.NextAttemptAt, now, o.Id }).ToList(),
                transaction);
            await connection.ExecuteAsync("UPDATE messages SET matrix_event_id = @EventId WHERE id = @MessageId", turn.MessageEvents, transaction);
            if (turn.ReactionEvents.Count > 0)
            {
                await connection.ExecuteAsync(
                    "UPDATE message_reactions SET matrix_event_id = @EventId WHERE message_id = @MessageId AND user_id = @UserId AND reaction = @Reaction",
                    turn.ReactionEvents, transaction);
            }
            await transaction.CommitAsync(CancellationToken.None);
        }
        foreach (var message in turn.MessageEvents)
        {
            recorded.Recorded(message.EventId);
        }
        foreach (var reaction in turn.ReactionEvents)
        {
            recorded.Recorded(reaction.EventId);
        }
        MatrixMetrics.MessagesSent.Inc(turn.Outcomes.Count(o => o.Action == MatrixActions.SendMessage && o.Status == "sent"));
        turn.Recorded();
    }

    private async Task RecordBacklogAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var backlog = await connection.QuerySingleAsync<Backlog>(
            "SELECT COUNT(*) AS depth, MIN(created_at) AS oldest FROM matrix_outbox WHERE status = 'pending'");
        MatrixMetrics.OutboxDepth.Set(backlog.Depth);
        MatrixMetrics.OldestPendingAge.Set(backlog.Oldest is { } oldest ? (time.GetUtcNow() - oldest).TotalSeconds : 0);
    }

    /// <summary>
    /// Sent actions and seen transaction ids are only needed for a while (redelivery, retries). Sent reactions are
    /// kept: removing a reaction later redacts the event its action produced.
    /// </summary>
    private async Task ForgetOldRowsAsync(CancellationToken cancellationToken)
    {
        var cutoff = time.UtcNowMicros() - options.Value.Retention;
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            "DELETE FROM matrix_outbox WHERE status = 'sent' AND action <> @react AND sent_at < @cutoff",
            new { react = MatrixActions.React, cutoff });
        await connection.ExecuteAsync("DELETE FROM matrix_appservice_transactions WHERE received_at < @cutoff", new { cutoff });
    }

    private sealed class Backlog
    {
        public long Depth { get; init; }
        public DateTimeOffset? Oldest { get; init; }
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
    public string TxnId { get; init; } = "";
    public int Attempts { get; init; }
    public DateTimeOffset NextAttemptAt { get; init; }
    public string? MatrixEventId { get; init; }
}

/// <summary>What the dispatcher records about one action.</summary>
public sealed record ActionOutcome(long Id, string Action, string Status, string? EventId, string? Error, DateTimeOffset NextAttemptAt);

/// <summary>A Matrix event id to store on the row of what it mirrors.</summary>
public sealed record MessageEvent(Guid MessageId, string EventId);

/// <summary>A reaction's Matrix event id, to store on the reaction's row.</summary>
public sealed record ReactionEvent(Guid MessageId, Guid UserId, string Reaction, string EventId);

/// <summary>
/// One conversation's drain: the messages read ahead for its actions, and what it sent but has not recorded yet.
/// Later actions of the same drain find the event ids here before they are stored.
/// </summary>
public sealed class DispatchTurn
{
    private readonly Dictionary<Guid, MessageDto> _messages = [];
    private readonly Dictionary<Guid, string> _messageEventIds = [];
    private readonly List<ActionOutcome> _outcomes = [];
    private readonly List<MessageEvent> _messageEvents = [];
    private readonly List<ReactionEvent> _reactionEvents = [];

    public IReadOnlyList<ActionOutcome> Outcomes => _outcomes;

    public IReadOnlyList<MessageEvent> MessageEvents => _messageEvents;

    public IReadOnlyList<ReactionEvent> ReactionEvents => _reactionEvents;

    public int Unrecorded => _outcomes.Count;

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

    public void MessageSent(Guid messageId, string eventId)
    {
        _messageEventIds[messageId] = eventId;
        _messageEvents.Add(new MessageEvent(messageId, eventId));
    }

    public void ReactionSent(Guid messageId, Guid userId, string reaction, string eventId) =>
        _reactionEvents.Add(new ReactionEvent(messageId, userId, reaction, eventId));

    public void Done(ActionOutcome outcome, DateTimeOffset now)
    {
        if (_outcomes.Count == 0)
        {
            OldestUnrecorded = now;
        }
        _outcomes.Add(outcome);
    }

    public void Recorded()
    {
        _outcomes.Clear();
        _messageEvents.Clear();
        _reactionEvents.Clear();
        OldestUnrecorded = DateTimeOffset.MaxValue;
    }
}

/// <summary>The action depends on something that is not there yet (e.g. its room); try again later.</summary>
public sealed class ActionNotReadyException(string message) : Exception(message);
