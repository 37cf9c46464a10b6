using System.Diagnostics;
using System.Text.Json.Nodes;
using HdrHistogram;

namespace RealtimeChat.Bench;

/// <summary>
/// A thread-safe latency recorder in microseconds (HdrHistogram, 3 significant digits, up to 10 minutes). Readers
/// lock out writers: a summary enumerates the histogram, which must not change under it (deliveries keep arriving
/// while a soak window is summarised).
/// </summary>
public sealed class Latency
{
    private const long Highest = 600_000_000;
    private readonly Lock _lock = new();
    private readonly LongHistogram _histogram = new(1, Highest, 3);

    public void RecordTicks(long stopwatchTicks) => RecordMicros(stopwatchTicks * 1_000_000 / Stopwatch.Frequency);

    public void RecordMicros(long micros)
    {
        lock (_lock)
        {
            _histogram.RecordValue(Math.Clamp(micros, 1, Highest));
        }
    }

    /// <summary>Adds every value <paramref name="other"/> recorded, e.g. one phase's rounds into its total.</summary>
    public void Add(Latency other)
    {
        lock (other._lock)
        {
            lock (_lock)
            {
                _histogram.Add(other._histogram);
            }
        }
    }

    public double PercentileMs(double percentile)
    {
        lock (_lock)
        {
            return _histogram.TotalCount == 0 ? 0 : _histogram.GetValueAtPercentile(percentile) / 1000.0;
        }
    }

    public double MaxMs
    {
        get
        {
            lock (_lock)
            {
                return _histogram.TotalCount == 0 ? 0 : _histogram.GetMaxValue() / 1000.0;
            }
        }
    }

    public LatencySummary Summary()
    {
        lock (_lock)
        {
            return new(_histogram.TotalCount, PercentileMs(50), PercentileMs(99), PercentileMs(99.9), MaxMs);
        }
    }
}

/// <summary>p50/p99/p99.9/max in milliseconds.</summary>
public sealed record LatencySummary(long Count, double P50, double P99, double P999, double Max)
{
    public JsonObject ToJson() => new()
    {
        ["count"] = Count,
        ["p50_ms"] = Math.Round(P50, 3),
        ["p99_ms"] = Math.Round(P99, 3),
        ["p999_ms"] = Math.Round(P999, 3),
        ["max_ms"] = Math.Round(Max, 3),
    };

    public override string ToString() => Count == 0 ? "-" : $"{P50:0.00} / {P99:0.00} / {P999:0.00} / {Max:0.00}";
}
