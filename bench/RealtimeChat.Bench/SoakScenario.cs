using System.Diagnostics;
using System.Text.Json.Nodes;

namespace RealtimeChat.Bench;

public sealed record SoakOptions
{
    public double Rate { get; init; } = 500;
    public double Seconds { get; init; } = 300;
    public double WarmupSeconds { get; init; } = 60;
    public double WindowSeconds { get; init; } = 10;
    public int Senders { get; init; } = 16;
    public int Conversations { get; init; } = 16;
    public double BaselineSeconds { get; init; } = 10;
}

/// <summary>A fixed send rate for minutes; memory and latency are sampled per window and must stay flat after warm-up.</summary>
public static class SoakScenario
{
    public static async Task<Report> RunAsync(HarnessSettings settings, SoakOptions o)
    {
        var log = settings.Log;
        var report = new Report("soak");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["rate"] = o.Rate;
        report.Parameters["seconds"] = o.Seconds;
        report.Parameters["warmup_seconds"] = o.WarmupSeconds;
        report.Parameters["window_seconds"] = o.WindowSeconds;

        await using var service = await ChatService.StartAsync(settings);
        using var api = new ChatApi(service.BaseUrl, o.Senders + 8);
        var senders = Enumerable.Range(0, o.Senders).Select(_ => User.New()).ToArray();
        var owners = Enumerable.Range(0, o.Conversations).Select(_ => User.New()).ToArray();
        var conversations = await Common.ParallelAsync(o.Conversations, 8, i => api.CreateGroupAsync(owners[i], $"soak {i}", senders.Select(s => s.Id)));
        var sink = new FrameSink();
        var overall = new Deliveries();
        void OnFrame(ReadOnlySpan<byte> frame, long now)
        {
            overall.OnFrame(frame, now);
            sink.OnFrame(frame, now);
        }
        var watchers = await Common.ParallelAsync(o.Conversations, 16, i => Watcher.ConnectAsync(service.BaseUrl, "/ws", owners[i].Token, OnFrame, CancellationToken.None));

        Task Send(int worker, long number, long timestamp, CancellationToken ct) =>
            api.SendAsync(senders[worker % senders.Length], conversations[(int)((worker + number) % conversations.Length)], Marker.Make(timestamp, number), ct);

        var windows = new JsonArray();
        var series = new List<(double At, double RssMb, LatencySummary Send, LatencySummary Delivery, double Rate)>();
        var total = new LoadResult();
        var clock = Stopwatch.StartNew();
        var windowCount = Math.Max(1, (int)Math.Round(o.Seconds / o.WindowSeconds));
        Common.Say(log, $"{o.Rate}/s for {o.Seconds} s, a window every {o.WindowSeconds} s");
        for (var i = 0; i < windowCount; i++)
        {
            var length = o.Seconds / windowCount;
            var deliveries = sink.Begin();
            var meter = new CpuMeter(service.Process.Pid);
            var sends = await Load.RunAsync(o.Senders, o.Rate, Common.Seconds(length), Send);
            total.Completed += sends.Completed;
            total.Errors += sends.Errors;
            total.FirstError ??= sends.FirstError;
            var cpuUse = meter.Stop();
            var rss = Common.Mb(service.Process.RssBytes());
            var at = clock.Elapsed.TotalSeconds;
            series.Add((at, rss, sends.Latency.Summary(), deliveries.Latency.Summary(), sends.PerSecond));
            windows.Add(new JsonObject
            {
                ["t_s"] = Fmt.R(at),
                ["rss_mb"] = Fmt.R(rss),
                ["sends_per_second"] = Fmt.R(sends.PerSecond),
                ["send_p99_ms"] = Fmt.R(sends.Latency.PercentileMs(99), 2),
                ["delivery_p99_ms"] = Fmt.R(deliveries.Latency.PercentileMs(99), 2),
                ["cpu_cores"] = cpuUse.ToJson(),
            });
            Common.Say(log, $"t={at:0}s rss={rss:0.0} MB sends/s={sends.PerSecond:0} send p99={sends.Latency.PercentileMs(99):0.00} ms delivery p99={deliveries.Latency.PercentileMs(99):0.00} ms cpu {cpuUse}");
        }
        // Taken before the baseline runs, which would otherwise count as time the service was sending.
        var sendingSeconds = clock.Elapsed.TotalSeconds;
        var dropped = watchers.Count(w => w.Failure is not null);
        await Task.WhenAll(watchers.Select(w => w.DisposeAsync().AsTask()));

        Common.Say(log, "baseline");
        await using var baseline = await Baseline.StartAsync(settings);
        var bSeconds = Common.Seconds(Math.Min(o.BaselineSeconds, o.Seconds));
        var (_, bRate) = await Common.BaselineRequestsAsync(baseline, o.Senders, o.Rate, bSeconds);
        var bEcho = await Common.BaselineEchoAsync(baseline, o.Conversations, o.Senders, o.Rate, bSeconds);

        var steady = series.Where(s => s.At > o.WarmupSeconds).ToList();
        if (steady.Count == 0)
        {
            steady = [series[^1]];
        }
        var warm = series.LastOrDefault(s => s.At <= o.WarmupSeconds) is { At: > 0 } w ? w : series[0];
        var end = series[^1];
        var growth = end.RssMb - warm.RssMb;
        var maxRss = steady.Max(s => s.RssMb);
        // Least-squares slope of RSS over the steady windows, in MB per minute.
        var meanT = steady.Average(s => s.At);
        var meanR = steady.Average(s => s.RssMb);
        var den = steady.Sum(s => (s.At - meanT) * (s.At - meanT));
        var slope = den == 0 ? 0 : steady.Sum(s => (s.At - meanT) * (s.RssMb - meanR)) / den * 60;
        var flat = growth <= Math.Max(10, warm.RssMb * 0.05);
        var firstP99 = steady[0].Send.P99;
        var lastP99 = end.Send.P99;
        report.Row("sends/s (mean over the run)", Fmt.N(total.Completed / sendingSeconds), Fmt.N(bRate.PerSecond));
        report.Row($"RSS at warm-up end ({warm.At:0} s) / end ({end.At:0} s) (MB)", $"{warm.RssMb:0.0} / {end.RssMb:0.0}");
        report.Row("RSS growth after warm-up (MB) / max (MB)", $"{growth:0.0} / {maxRss:0.0}", "", null, "<= max(10 MB, 5%)", flat);
        report.Row("RSS slope after warm-up (MB/min)", Fmt.N(slope, "0.00"));
        report.Row("send p99, first / last steady window (ms)", $"{firstP99:0.00} / {lastP99:0.00}", Fmt.N(bRate.Latency.PercentileMs(99), "0.00"));
        report.Row("send latency, worst steady window p99 (ms)", Fmt.N(steady.Max(s => s.Send.P99), "0.00"));
        report.Row("send->WS delivery, whole run", overall.Latency.Summary().ToString(), bEcho.Latency.Summary() + " (echo)", Report.Ratio(overall.Latency.PercentileMs(99), bEcho.Latency.PercentileMs(99)));
        report.Row("errors / WebSockets dropped", $"{total.Errors} / {dropped}");
        report.Figures["sent"] = total.Completed;
        report.Figures["errors"] = total.Errors;
        report.Figures["rss_warm_mb"] = Fmt.R(warm.RssMb);
        report.Figures["rss_end_mb"] = Fmt.R(end.RssMb);
        report.Figures["rss_growth_mb"] = Fmt.R(growth);
        report.Figures["rss_slope_mb_per_min"] = Fmt.R(slope, 3);
        report.Figures["memory_flat"] = flat;
        report.Figures["send_p99_first_steady_ms"] = Fmt.R(firstP99, 2);
        report.Figures["send_p99_last_ms"] = Fmt.R(lastP99, 2);
        report.Figures["delivery_latency"] = overall.Latency.Summary().ToJson();
        report.Figures["delivered"] = overall.Count;
        report.Figures["windows"] = windows;
        report.Baseline["request_latency_at_rate"] = bRate.Latency.Summary().ToJson();
        report.Baseline["echo_latency_at_rate"] = bEcho.Latency.Summary().ToJson();
        report.Ratios["delivery_p99"] = Fmt.R(Report.Ratio(overall.Latency.PercentileMs(99), bEcho.Latency.PercentileMs(99)), 2);
        report.Ratios["send_p99_last_window"] = Fmt.R(Report.Ratio(lastP99, bRate.Latency.PercentileMs(99)), 2);
        if (total.FirstError is { } error)
        {
            report.Notes.Add("first error: " + error);
        }
        return report;
    }
}
