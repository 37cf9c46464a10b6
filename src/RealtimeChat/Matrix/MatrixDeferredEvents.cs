using System.Data.Common;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Dapper;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>Event ids (and room mappings) the bridge has just recorded; events waiting on them can now apply.</summary>
public sealed class RecordedEventIds
{
    private readonly Channel<string> _recorded = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true });

    public void Recorded(string eventId) => _recorded.Writer.TryWrite(eventId);

    public ChannelReader<string> Reader => _recorded.Reader;
}

/// <summary>
/// Applies deferred Matrix events — relations whose target event we did not know yet, events from a room whose
/// mapping was being saved — once what they wait for is recorded, and sweeps for any whose target appeared while
/// we were not looking. Ones whose target never appears are dropped after a day with a log line.
/// </summary>
public sealed class MatrixDeferredWorker(
    ChatDatabase database, RecordedEventIds recorded, MatrixInbound inbound, TimeProvider time, ILogger<MatrixDeferredWorker> logger) : BackgroundService
{
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan LookupDelay = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan GiveUpAfter = TimeSpan.FromDays(1);
    private const int MaxTargetsPerLookup = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var nextSweep = time.GetUtcNow() + SweepInterval;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                wait.CancelAfter(Max(nextSweep - time.GetUtcNow(), TimeSpan.Zero));
                var targets = new List<string>();
                try
                {
                    targets.Add(await recorded.Reader.ReadAsync(wait.Token));
                    // Every sent message records an id, and almost none has an event waiting for it: the ids of the
                    // next moment go into the same lookup, not one query each.
                    await Task.Delay(LookupDelay, time, stoppingToken);
                }
                catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
                {
                }
                while (targets.Count < MaxTargetsPerLookup && recorded.Reader.TryRead(out var more))
                {
                    targets.Add(more);
                }
                if (targets.Count > 0)
                {
                    await ApplyAsync(connection => SqlDialect.InList(connection, "target_event_id", "targets"), new { targets }, stoppingToken);
                }
                if (time.GetUtcNow() >= nextSweep)
                {
                    await ApplyAsync(
                        _ => MatrixEvents.TargetKnown,
                        null, stoppingToken);
                    await ExpireAsync(stoppingToken);
                    nextSweep = time.GetUtcNow() + SweepInterval;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                logger.LogError(ex, "Applying deferred Matrix events failed; retrying on the next sweep");
            }
        }
    }

    private async Task ApplyAsync(Func<DbConnection, string> where, object? parameters, CancellationToken cancellationToken)
    {
        List<Deferred> due;
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            due = (await connection.QueryAsync<Deferred>(
                $"SELECT event_id, target_event_id, payload FROM matrix_deferred_events WHERE {where(connection)} ORDER BY received_at", parameters)).AsList();
        }
        foreach (var deferred in due)
        {
            await inbound.HandleAsync((JsonObject)JsonNode.Parse(deferred.Payload)!, InboundBatch.Replay(deferred.TargetEventId), cancellationToken);
            // An event that now waits for something else had its row pointed at that: it stays.
            await using var connection = await database.OpenAsync(cancellationToken);
            await connection.ExecuteAsync(
                "DELETE FROM matrix_deferred_events WHERE event_id = @EventId AND target_event_id = @TargetEventId", new { deferred.EventId, deferred.TargetEventId });
        }
    }

    private async Task ExpireAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var expired = await connection.ExecuteAsync(
            "DELETE FROM matrix_deferred_events WHERE received_at < @cutoff", new { cutoff = time.UtcNowMicros() - GiveUpAfter });
        if (expired > 0)
        {
            logger.LogWarning("Dropped {Count} Matrix relations whose target event never became known", expired);
        }
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private sealed class Deferred
    {
        public string EventId { get; init; } = "";
        public string TargetEventId { get; init; } = "";
        public string Payload { get; init; } = "";
    }
}
