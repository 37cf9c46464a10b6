using Prometheus;

namespace RealtimeChat;

public static class ChatMetrics
{
    public static readonly Counter MessagesSent = Metrics.CreateCounter(
        "chat_messages_sent_total", "Messages stored, by kind.", "kind");

    public static readonly Histogram SendBatchSize = Metrics.CreateHistogram(
        "chat_send_batch_size", "New messages stored per transaction (group commit).",
        new HistogramConfiguration { Buckets = [1, 2, 4, 8, 16, 32, 64, 128, 256] });

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
