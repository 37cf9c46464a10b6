using Prometheus;

namespace RealtimeChat.Matrix;

/// <summary>The seed's metric names, plus what an operator needs to see the outbox.</summary>
public static class MatrixMetrics
{
    public static readonly Counter MessagesSent = Metrics.CreateCounter("matrix_messages_sent_total", "Messages sent to Matrix.");

    public static readonly Counter Errors = Metrics.CreateCounter("matrix_errors_total", "Matrix errors, by errcode or status.", "error");

    public static readonly Counter SyncEvents = Metrics.CreateCounter("matrix_sync_events_total", "Matrix events received (sync or appservice transactions).");

    public static readonly Counter InboundEvents = Metrics.CreateCounter(
        "matrix_inbound_events_total", "Matrix room events received, by outcome (applied, repeated, refused, bad_event).", "outcome");

    public static readonly Counter TransactionsReceived = Metrics.CreateCounter("matrix_appservice_transactions_total", "Appservice transactions received, by outcome.", "outcome");

    public static readonly Counter TimelineReads = Metrics.CreateCounter(
        "matrix_room_timeline_reads_total", "Rooms read from their timeline, by why: a push after a pause in pushes, or the sweep after a room's last push.", "reason");

    public static readonly Counter TimelineEvents = Metrics.CreateCounter(
        "matrix_room_timeline_events_total", "Events applied from a room's timeline before any push brought them: what the homeserver dropped, or what a later push would have brought.");

    public static readonly Counter FoundOnHomeserver = Metrics.CreateCounter(
        "matrix_actions_found_on_homeserver_total", "Actions whose event was already on the homeserver when they were about to be sent again.");

    public static readonly Gauge OutboxDepth = Metrics.CreateGauge("matrix_outbox_pending", "Matrix-bound actions waiting to be sent.");

    public static readonly Gauge OldestPendingAge = Metrics.CreateGauge("matrix_outbox_oldest_pending_seconds", "Age of the oldest pending Matrix-bound action.");

    public static readonly Histogram SendLatency = Metrics.CreateHistogram(
        "matrix_send_latency_seconds", "Time the homeserver took for one outbox action.",
        new HistogramConfiguration { LabelNames = ["action"], Buckets = Histogram.ExponentialBuckets(0.001, 2, 16) });
}
