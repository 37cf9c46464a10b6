using Prometheus;

namespace RealtimeChat;

public static class ChatMetrics
{
    /// <summary>
    /// The .NET meters exported besides our own metrics. prometheus-net exports every meter by default, through a
    /// path that costs microseconds per measurement; Kestrel's memory pool records one for every 4 KiB buffer a
    /// socket reads (a fifth of the service's CPU under an upload flood, measured), Npgsql one per command, and the
    /// framework's request meters repeat <c>http_request_duration_seconds</c>. The runtime's instruments are read
    /// when scraped, Kestrel's change once per connection.
    /// </summary>
    private static readonly HashSet<string> ExportedMeters = ["System.Runtime", "Microsoft.AspNetCore.Server.Kestrel"];

    /// <summary>Applies before the first scrape, when prometheus-net starts listening to meters.</summary>
    public static void ConfigureMeterExport() =>
        Metrics.ConfigureMeterAdapter(adapter => adapter.InstrumentFilterPredicate = instrument => ExportedMeters.Contains(instrument.Meter.Name));

    public static readonly Counter MessagesSent = Metrics.CreateCounter(
        "chat_messages_sent_total", "Messages stored, by kind.", "kind");

    public static readonly Histogram SendBatchSize = Metrics.CreateHistogram(
        "chat_send_batch_size", "New messages stored per transaction (group commit).",
        new HistogramConfiguration { Buckets = [1, 2, 4, 8, 16, 32, 64, 128, 256] });

    /// <summary>
    /// On PostgreSQL with synchronous commit this is the WAL flush: when sends are slow but this is too, the time goes
    /// to the storage's fsync, which every writer of the database shares, not to the service.
    /// </summary>
    public static readonly Histogram CommitDuration = Metrics.CreateHistogram(
        "chat_db_commit_seconds", "Time for the database to confirm the commit of a chat change (a send batch, an edit, a membership change…).",
        new HistogramConfiguration { Buckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });

    public static readonly Gauge WebSocketConnections = Metrics.CreateGauge(
        "chat_websocket_connections", "Open WebSocket connections.");

    public static readonly Counter WebSocketDisconnects = Metrics.CreateCounter(
        "chat_websocket_disconnects_total", "WebSocket connections closed, by reason.", "reason");

    public static readonly Histogram FanoutLatency = Metrics.CreateHistogram(
        "chat_fanout_latency_seconds", "Time from commit to an event frame written to a WebSocket.",
        new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0001, 2, 16) });

    public static readonly Counter EventsReplayed = Metrics.CreateCounter(
        "chat_events_replayed_total", "Events sent from the database to resuming WebSocket clients.");
}
