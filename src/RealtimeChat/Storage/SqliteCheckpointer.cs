using System.Diagnostics;
using Dapper;
using Microsoft.Extensions.Options;
using Prometheus;

namespace RealtimeChat.Storage;

/// <summary>
/// Copies SQLite's write-ahead log into the database file on a timer of its own, so that no commit has to.
/// With <c>synchronous = NORMAL</c> a commit only writes the WAL; the one flush to disk is at a checkpoint, which
/// SQLite otherwise runs inside whichever commit takes the WAL past 1,000 pages. That commit holds the single writer
/// for as long as the storage takes to flush: seconds when the disk stalls, with every sender of every conversation
/// queued behind it (docs/performance.md, noisy-neighbour). Here the flush happens beside the writer, on a thread
/// of its own, and bounds what an OS crash can lose to the commits of the last interval. Writers still checkpoint
/// by themselves past <see cref="ChatDatabase.WriterCheckpointPages"/>, should this fall behind or fail.
/// </summary>
public sealed class SqliteCheckpointer(ChatDatabase database, IOptions<DatabaseOptions> options, ILogger<SqliteCheckpointer> logger)
    : BackgroundService
{
    public static readonly Histogram CheckpointDuration = Metrics.CreateHistogram(
        "chat_db_checkpoint_seconds", "SQLite only: time a background checkpoint of the write-ahead log took, its flush to disk included.",
        new HistogramConfiguration { Buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] });

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        database.Provider != DatabaseProvider.Sqlite
            ? Task.CompletedTask
            // Microsoft.Data.Sqlite blocks its thread for the whole flush; a stalled disk must not hold a pool thread.
            : Task.Factory.StartNew(() => Run(options.Value.SqliteCheckpointInterval, stoppingToken), stoppingToken,
                TaskCreationOptions.LongRunning, TaskScheduler.Default);

    private void Run(TimeSpan interval, CancellationToken stoppingToken)
    {
        var failing = false;
        (long WalFrames, long Copied) last = default;
        while (!stoppingToken.WaitHandle.WaitOne(interval))
        {
            try
            {
                var start = Stopwatch.GetTimestamp();
                var (walFrames, copied) = Checkpoint();
                // An interval without commits leaves the WAL as it was; only checkpoints that had work are timed.
                if ((walFrames, copied) != last)
                {
                    CheckpointDuration.Observe(Stopwatch.GetElapsedTime(start).TotalSeconds);
                    last = (walFrames, copied);
                }
                if (failing)
                {
                    failing = false;
                    logger.LogInformation("SQLite checkpoints work again ({Frames} WAL frames, {Copied} copied)", walFrames, copied);
                }
            }
            catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
            {
                // Transient as far as this loop can tell (a full or failing disk): the next interval tries again, and
                // writers checkpoint by themselves meanwhile. Logged once per run of failures, not every interval.
                if (!failing)
                {
                    failing = true;
                    logger.LogWarning(ex, "SQLite checkpoint failed; retrying every {Interval}", interval);
                }
            }
        }
    }

    /// <summary>
    /// PASSIVE: copies what no reader still needs and never waits for readers or writers, so it cannot block a send.
    /// Returns the WAL's frames and how many of them are now in the database file.
    /// </summary>
    private (long WalFrames, long Copied) Checkpoint()
    {
        using var connection = database.OpenSqlite();
        var result = connection.QuerySingle<(long Busy, long WalFrames, long Copied)>("PRAGMA wal_checkpoint(PASSIVE)");
        return (result.WalFrames, result.Copied);
    }
}
