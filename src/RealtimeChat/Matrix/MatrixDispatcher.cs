using System.Collections.Concurrent;
using System.Diagnostics;
using Dapper;
using Microsoft.Extensions.Options;
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
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<MatrixDispatcher> logger) : BackgroundService
{
    private const int ActionsPerTurn = 100;

    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly ConcurrentDictionary<Guid, Task> _inFlight = new();
    private DateTimeOffset _nextBacklogReading;
    private DateTimeOffset _nextRetentionSweep;

    public void Wake()
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
                var free = settings.MaxRoomsInFlight - _inFlight.Count;
                if (free > 0)
                {
                    foreach (var conversationId in await DueConversationsAsync(free + _inFlight.Count, stoppingToken))
                    {
                        if (_inFlight.Count >= settings.MaxRoomsInFlight)
                        {
                            break;
                        }
                        // Registered before it starts: a drain that finished first would otherwise leave a stale
                        // entry behind and its conversation would never be dispatched again.
                        var drain = new Task<Task>(() => DrainAsync(conversationId, stoppingToken));
                        if (_inFlight.TryAdd(conversationId, drain.Unwrap()))
                        {
                            drain.Start(TaskScheduler.Default);
                        }
                    }
                }
                // Wake-ups come once per stored change under load; the gauges need not.
                if (time.GetUtcNow() >= _nextBacklogReading)
                {
                    await RecordBacklogAsync(stoppingToken);
                    _nextBacklogReading = time.GetUtcNow() + settings.PollInterval;
                }
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
                await _wake.WaitAsync(settings.PollInterval, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        await Task.WhenAll(_inFlight.Values);
    }

    private async Task<List<Guid>> DueConversationsAsync(int limit, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        // The head (oldest pending action) of each conversation's queue decides whether the conversation is due.
        return (await connection.QueryAsync<Guid>(
            """
            SELECT o.conversation_id
              FROM matrix_outbox o
             WHERE o.id IN (SELECT MIN(id) FROM matrix_outbox WHERE status = 'pending' GROUP BY conversation_id)
               AND o.next_attempt_at <= @now
             ORDER BY o.id
             LIMIT @limit
            """,
            new { now = time.UtcNowMicros(), limit })).AsList();
    }

    private async Task DrainAsync(Guid conversationId, CancellationToken stoppingToken)
    {
        try
        {
            for (var sent = 0; sent < ActionsPerTurn && !stoppingToken.IsCancellationRequested; sent++)
            {
                OutboxAction? action;
                await using (var connection = await database.OpenAsync(stoppingToken))
                {
                    action = await connection.QuerySingleOrDefaultAsync<OutboxAction>(
                        """
                        SELECT * FROM matrix_outbox
                         WHERE conversation_id = @conversationId AND status = 'pending'
                         ORDER BY id LIMIT 1
                        """,
                        new { conversationId });
                }
                if (action is null || action.NextAttemptAt > time.GetUtcNow())
                {
                    return;
                }
                if (!await RunAsync(action, stoppingToken))
                {
                    return;
                }
            }
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
            _inFlight.TryRemove(conversationId, out _);
            Wake();
        }
    }

    /// <returns>Whether the queue may go on to its next action.</returns>
    private async Task<bool> RunAsync(OutboxAction action, CancellationToken stoppingToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var eventId = await sender.SendAsync(action, stoppingToken);
            await MarkAsync(action, "sent", eventId, null, action.NextAttemptAt);
            MatrixMetrics.SendLatency.WithLabels(action.Action).Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
            if (action.Action == MatrixActions.SendMessage)
            {
                MatrixMetrics.MessagesSent.Inc();
            }
            return true;
        }
        catch (MatrixApiException ex) when (ex.IsPermanent)
        {
            MatrixMetrics.Errors.WithLabels(ex.Errcode ?? ((int?)ex.Status)?.ToString() ?? "permanent").Inc();
            logger.LogWarning("Matrix action {Action} #{Id} of conversation {ConversationId} parked as failed: {Error}",
                action.Action, action.Id, action.ConversationId, ex.Message);
            await MarkAsync(action, "failed", null, ex.Message, action.NextAttemptAt);
            return true;
        }
        catch (Exception ex) when (ex is MatrixApiException or ActionNotReadyException && !stoppingToken.IsCancellationRequested)
        {
            var matrix = ex as MatrixApiException;
            MatrixMetrics.Errors.WithLabels(matrix?.Errcode ?? (matrix?.Status is { } status ? ((int)status).ToString() : "unreachable")).Inc();
            var delay = RetryDelay(action.Attempts + 1, matrix?.RetryAfter);
            logger.LogWarning("Matrix action {Action} #{Id} of conversation {ConversationId} failed (attempt {Attempt}), retrying in {Delay}: {Error}",
                action.Action, action.Id, action.ConversationId, action.Attempts + 1, delay, ex.Message);
            await MarkAsync(action, "pending", null, ex.Message, time.UtcNowMicros() + delay);
            return false;
        }
    }

    private TimeSpan RetryDelay(int attempt, TimeSpan? retryAfter)
    {
        var settings = options.Value;
        if (retryAfter is { } wait && wait > TimeSpan.Zero)
        {
            return wait < settings.MaxRetryDelay ? wait : settings.MaxRetryDelay;
        }
        var exponential = settings.MinRetryDelay * Math.Pow(2, Math.Min(attempt - 1, 20));
        var capped = exponential < settings.MaxRetryDelay ? exponential : settings.MaxRetryDelay;
        // Jitter so rooms that failed together do not retry together.
        return capped * (0.8 + Random.Shared.NextDouble() * 0.4);
    }

    private async Task MarkAsync(OutboxAction action, string status, string? eventId, string? error, DateTimeOffset nextAttemptAt)
    {
        // Recording the outcome must not be abandoned half-way by shutdown: the homeserver already has the event.
        await using var connection = await database.OpenAsync(CancellationToken.None);
        await connection.ExecuteAsync(
            """
            UPDATE matrix_outbox
               SET status = @status, attempts = attempts + 1, matrix_event_id = COALESCE(@eventId, matrix_event_id),
                   last_error = @error, next_attempt_at = @nextAttemptAt, sent_at = CASE WHEN @status = 'sent' THEN @now ELSE sent_at END
             WHERE id = @Id
            """,
            new { status, eventId, error, nextAttemptAt, now = time.UtcNowMicros(), action.Id });
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

/// <summary>The action depends on something that is not there yet (e.g. its room); try again later.</summary>
public sealed class ActionNotReadyException(string message) : Exception(message);
