using System.Net;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Client mode's inbound path: long-polls <c>/sync</c> as the service account and applies each batch through the
/// same handler as appservice transactions. <c>next_batch</c> is saved only after the batch is stored, so a crash
/// replays at most one batch, which the handler absorbs (it ignores events it already holds).
/// </summary>
public sealed class MatrixSyncWorker(
    ChatDatabase database,
    MatrixApi api,
    MatrixCredentials credentials,
    MatrixInbound inbound,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<MatrixSyncWorker> logger) : BackgroundService
{
    private static readonly JsonObject Filter = new()
    {
        ["presence"] = new JsonObject { ["not_types"] = new JsonArray("*") },
        ["account_data"] = new JsonObject { ["not_types"] = new JsonArray("*") },
        ["room"] = new JsonObject
        {
            ["timeline"] = new JsonObject { ["limit"] = 100 },
            ["state"] = new JsonObject { ["lazy_load_members"] = true },
            ["account_data"] = new JsonObject { ["not_types"] = new JsonArray("*") },
        },
    };

    private const int GapPageSize = 500;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        var account = settings.UserId!;
        string? filterId = null;
        var since = await LoadSinceAsync(account, stoppingToken);
        var failures = 0;
        logger.LogInformation("Matrix sync loop started for {Account} from {Since}", account, since ?? "the beginning");

        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                filterId ??= (string?)(await api.SendAsync(HttpMethod.Post, $"/_matrix/client/v3/user/{Uri.EscapeDataString(account)}/filter", null, Filter, stoppingToken))?["filter_id"];
                var query = $"/_matrix/client/v3/sync?timeout={(int)settings.SyncTimeout.TotalMilliseconds}&filter={Uri.EscapeDataString(filterId ?? "")}";
                if (since is not null)
                {
                    query += $"&since={Uri.EscapeDataString(since)}";
                }
                var batch = await api.SendAsync(HttpMethod.Get, query, null, null, stoppingToken) as JsonObject;
                await ApplyAsync(batch, since, stoppingToken);
                if ((string?)batch?["next_batch"] is { } next)
                {
                    since = next;
                    await SaveSinceAsync(account, next);
                }
                failures = 0;
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (MatrixApiException ex) when (ex.Status == HttpStatusCode.BadRequest && ex.Message.Contains("Invalid stream token", StringComparison.Ordinal))
            {
                logger.LogError("The saved sync token was rejected; syncing from the beginning (events already held are skipped)");
                MatrixMetrics.Errors.WithLabels("invalid_since").Inc();
                since = null;
            }
            catch (Exception ex)
            {
                // Whatever failed (the homeserver, our database), the loop must go on: a background service that
                // throws stops the whole host.
                failures++;
                var matrix = ex as MatrixApiException;
                if (matrix?.Status == HttpStatusCode.Unauthorized)
                {
                    // A revoked or wrong token: say so plainly; with a password configured, log in again.
                    logger.LogError("Matrix rejected the service account's access token ({Errcode}); check Matrix:AccessToken", matrix.Errcode);
                    credentials.Invalidate();
                }
                MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
                var delay = settings.RetryDelay(failures, matrix?.RetryAfter);
                if (matrix is { HomeserverDown: true } && delay > settings.HealthProbeInterval)
                {
                    // Waiting for the homeserver to come back: ask as often as the dispatcher's probe does.
                    delay = settings.HealthProbeInterval;
                }
                // A homeserver's refusal says all in its message; anything else needs its stack trace.
                logger.LogWarning(matrix is null ? ex : null, "Matrix sync failed (attempt {Attempt}), retrying in {Delay}: {Error}", failures, delay, ex.Message);
                try
                {
                    await Task.Delay(delay, time, stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    private async Task ApplyAsync(JsonObject? batch, string? since, CancellationToken cancellationToken)
    {
        if ((batch?["rooms"] as JsonObject)?["join"] is not JsonObject joined)
        {
            return;
        }
        List<JsonObject> events = [], ephemeral = [];
        foreach (var (roomId, room) in joined)
        {
            var timeline = (room as JsonObject)?["timeline"] as JsonObject;
            if (since is not null && timeline?["limited"] is JsonValue limited && limited.TryGetValue<bool>(out var gap) && gap
                && Json.String(timeline["prev_batch"]) is { } prevBatch)
            {
                // More happened in the room since the last sync than one timeline holds (we were down, or slow).
                events.AddRange(await GapAsync(roomId, prevBatch, since, cancellationToken));
            }
            // Sync omits room_id inside a room's timeline.
            foreach (var evt in (timeline?["events"] as JsonArray ?? []).OfType<JsonObject>())
            {
                evt["room_id"] = roomId;
                events.Add(evt);
            }
            foreach (var evt in (((room as JsonObject)?["ephemeral"] as JsonObject)?["events"] as JsonArray ?? []).OfType<JsonObject>())
            {
                evt["room_id"] = roomId;
                ephemeral.Add(evt);
            }
        }
        MatrixMetrics.SyncEvents.Inc(events.Count);
        await inbound.HandleBatchAsync(events, ephemeral, cancellationToken);
    }

    /// <summary>The events a limited timeline left out, between the last sync and its first event, oldest first.</summary>
    private async Task<List<JsonObject>> GapAsync(string roomId, string prevBatch, string since, CancellationToken cancellationToken)
    {
        var missed = new List<JsonObject>();
        var from = prevBatch;
        while (true)
        {
            var page = await api.SendAsync(HttpMethod.Get,
                $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/messages?dir=b&limit={GapPageSize}&from={Uri.EscapeDataString(from)}&to={Uri.EscapeDataString(since)}",
                null, null, cancellationToken);
            var chunk = (page?["chunk"] as JsonArray ?? []).OfType<JsonObject>().ToList();
            missed.AddRange(chunk);
            if (chunk.Count == 0 || Json.String(page?["end"]) is not { } end || end == from)
            {
                break;
            }
            from = end;
        }
        missed.Reverse();
        logger.LogInformation("Room {RoomId} had {Count} events more than one sync holds; read them from its history", roomId, missed.Count);
        return missed;
    }

    private async Task<string?> LoadSinceAsync(string account, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>("SELECT next_batch FROM matrix_sync_state WHERE account = @account", new { account });
    }

    private async Task SaveSinceAsync(string account, string nextBatch)
    {
        await using var connection = await database.OpenAsync(CancellationToken.None);
        await connection.ExecuteAsync(
            """
            INSERT INTO matrix_sync_state (account, next_batch, updated_at) VALUES (@account, @nextBatch, @now)
            ON CONFLICT (account) DO UPDATE SET next_batch = @nextBatch, updated_at = @now
            """,
            new { account, nextBatch, now = time.UtcNowMicros() });
    }
}
