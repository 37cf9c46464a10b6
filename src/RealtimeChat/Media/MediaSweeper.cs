using Dapper;
using Microsoft.Extensions.Options;
using Prometheus;
using RealtimeChat.Storage;

namespace RealtimeChat.Media;

/// <summary>
/// Deletes stored objects that no media row points at. An upload writes its object before the row commits, so a
/// crash between the two (or a failed delete after a message was deleted) leaves ciphertext nobody can read but
/// that still takes space. Only objects older than <see cref="MediaOptions.OrphanGracePeriod"/> are considered, so
/// an upload about to commit is never touched.
/// </summary>
public sealed class MediaSweeper(
    IMediaStore store, ChatDatabase database, TimeProvider time, IOptions<MediaOptions> options, ILogger<MediaSweeper> logger) : BackgroundService
{
    public static readonly Counter OrphansDeleted = Prometheus.Metrics.CreateCounter(
        "chat_media_orphans_deleted_total", "Stored media objects deleted by the sweeper because no media row refers to them.");

    private const int BatchSize = 500;
    private const string PartialSuffix = ".partial";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.SweepInterval;
        if (interval == TimeSpan.Zero)
        {
            return;
        }
        using var timer = new PeriodicTimer(interval, time);
        do
        {
            try
            {
                var deleted = await SweepAsync(stoppingToken);
                if (deleted > 0)
                {
                    logger.LogInformation("Deleted {Count} orphaned media objects", deleted);
                }
            }
            catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
            {
                logger.LogWarning(ex, "Media sweep failed; trying again in {Interval}", interval);
            }
        } while (await WaitAsync(timer, stoppingToken));
    }

    /// <summary>One pass over the store; returns how many objects were deleted.</summary>
    public async Task<int> SweepAsync(CancellationToken cancellationToken)
    {
        var cutoff = time.GetUtcNow() - options.Value.OrphanGracePeriod;
        var deleted = 0;
        var batch = new List<(string Key, Guid? MediaId)>(BatchSize);
        await foreach (var stored in store.ListAsync(cancellationToken))
        {
            if (stored.LastModified > cutoff || Classify(stored.StorageKey) is not { } candidate)
            {
                continue;
            }
            batch.Add(candidate);
            if (batch.Count == BatchSize)
            {
                deleted += await DeleteOrphansAsync(batch, cancellationToken);
                batch.Clear();
            }
        }
        if (batch.Count > 0)
        {
            deleted += await DeleteOrphansAsync(batch, cancellationToken);
        }
        return deleted;
    }

    // Keys are "<last two hex digits>/<media id without dashes>"; a local write in progress adds ".<guid>.partial".
    // Anything else in the store was not put there by this service and is left alone.
    private static (string Key, Guid? MediaId)? Classify(string key)
    {
        var name = key[(key.LastIndexOf('/') + 1)..];
        if (name.EndsWith(PartialSuffix, StringComparison.Ordinal))
        {
            // Interrupted before its rename: never anything a row could refer to.
            return (key, null);
        }
        return name.Length == 32 && Guid.TryParseExact(name, "N", out var id) && key == $"{name[^2..]}/{name}" ? (key, id) : null;
    }

    private async Task<int> DeleteOrphansAsync(List<(string Key, Guid? MediaId)> batch, CancellationToken cancellationToken)
    {
        var ids = batch.Where(b => b.MediaId is not null).Select(b => b.MediaId!.Value).ToArray();
        HashSet<Guid> referenced = [];
        if (ids.Length > 0)
        {
            await using var connection = await database.OpenAsync(cancellationToken);
            referenced = [.. await connection.QueryAsync<Guid>(
                $"SELECT id FROM media WHERE {SqlDialect.InList(connection, "id", "ids")}", new { ids })];
        }
        var deleted = 0;
        foreach (var (key, mediaId) in batch)
        {
            if (mediaId is { } id && referenced.Contains(id))
            {
                continue;
            }
            await store.DeleteAsync(key, cancellationToken);
            OrphansDeleted.Inc();
            deleted++;
        }
        return deleted;
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stoppingToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
