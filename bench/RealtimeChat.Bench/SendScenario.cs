using System.Diagnostics;

namespace RealtimeChat.Bench;

public sealed record SendOptions
{
    public int Senders { get; init; } = 64;
    public int Conversations { get; init; } = 64;
    public double Seconds { get; init; } = 20;
    public double Rate { get; init; } = 1000;
    public double Warmup { get; init; } = 3;
    public double BaselineSeconds { get; init; } = 10;
}

/// <summary>C concurrent senders post to M conversations, each watched by one WebSocket member.</summary>
public static class SendScenario
{
    public static async Task<Report> RunAsync(HarnessSettings settings, SendOptions o)
    {
        var log = settings.Log;
        var report = new Report("send");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["senders"] = o.Senders;
        report.Parameters["conversations"] = o.Conversations;
        report.Parameters["seconds"] = o.Seconds;
        report.Parameters["rate"] = o.Rate;

        await using var service = await ChatService.StartAsync(settings);
        using var api = new ChatApi(service.BaseUrl, o.Senders + 8);
        var senders = Enumerable.Range(0, o.Senders).Select(_ => User.New()).ToArray();
        var owners = Enumerable.Range(0, o.Conversations).Select(_ => User.New()).ToArray();
        var conversations = await Common.ParallelAsync(o.Conversations, 8, i => api.CreateGroupAsync(owners[i], $"bench {i}", senders.Select(s => s.Id)));
        var sink = new FrameSink();
        var watchers = await Common.ParallelAsync(o.Conversations, 16, i => Watcher.ConnectAsync(service.BaseUrl, "/ws", owners[i].Token, sink.OnFrame, CancellationToken.None));
        Common.Say(log, $"{o.Conversations} conversations of {o.Senders + 1} members, {watchers.Length} watchers connected");

        Task Send(int worker, long number, long timestamp, CancellationToken ct) =>
            api.SendAsync(senders[worker % senders.Length], conversations[(int)((worker + number) % conversations.Length)], Marker.Make(timestamp, number), ct);

        sink.Begin();
        await Load.RunAsync(o.Senders, 0, Common.Seconds(o.Warmup), Send);
        await sink.Current.SettleAsync(long.MaxValue, TimeSpan.FromSeconds(1));

        Common.Say(log, $"closed loop, {o.Senders} senders, {o.Seconds} s");
        var maxDeliveries = sink.Begin(trackArrivals: true);
        var cpu = new CpuMeter(service.Process.Pid);
        var batchesBefore = await api.MetricsAsync();
        var max = await Load.RunAsync(o.Senders, 0, Common.Seconds(o.Seconds), Send, trackEnds: true);
        var maxCpu = cpu.Stop();
        var maxBatch = SendBatch.Between(batchesBefore, await api.MetricsAsync());
        await maxDeliveries.SettleAsync(max.Completed, TimeSpan.FromSeconds(5));
        var maxBeyond = maxDeliveries.BeyondSend(max);

        LoadResult? atRate = null;
        Deliveries? rateDeliveries = null;
        Latency? rateBeyond = null;
        CpuUse? rateCpu = null;
        double? rateBatch = null;
        if (o.Rate > 0)
        {
            Common.Say(log, $"open loop at {o.Rate}/s, {o.Seconds} s");
            rateDeliveries = sink.Begin(trackArrivals: true);
            var rateMeter = new CpuMeter(service.Process.Pid);
            var rateBatchesBefore = await api.MetricsAsync();
            atRate = await Load.RunAsync(o.Senders, o.Rate, Common.Seconds(o.Seconds), Send, trackEnds: true);
            rateCpu = rateMeter.Stop();
            rateBatch = SendBatch.Between(rateBatchesBefore, await api.MetricsAsync());
            await rateDeliveries.SettleAsync(atRate.Completed, TimeSpan.FromSeconds(5));
            rateBeyond = rateDeliveries.BeyondSend(atRate);
        }
        var rss = service.Process.RssBytes();
        var dropped = watchers.Count(w => w.Failure is not null);
        await Task.WhenAll(watchers.Select(w => w.DisposeAsync().AsTask()));

        Common.Say(log, "baseline");
        await using var baseline = await Baseline.StartAsync(settings);
        var bSeconds = Common.Seconds(Math.Min(o.BaselineSeconds, o.Seconds));
        var (bMax, bRate) = await Common.BaselineRequestsAsync(baseline, o.Senders, o.Rate, bSeconds);
        var bEcho = await Common.BaselineEchoAsync(baseline, o.Conversations, o.Senders, o.Rate, bSeconds);

        var target = settings.Postgres is null ? 3000 : 5000;
        var m = max.Latency.Summary();
        var md = maxDeliveries.Latency.Summary();
        report.Row($"sends/s, {o.Senders} senders (closed loop)", Fmt.N(max.PerSecond), Fmt.N(bMax.PerSecond), Report.Ratio(max.PerSecond, bMax.PerSecond), $">= {target}", max.PerSecond >= target);
        report.Row("send latency, closed loop", m.ToString(), bMax.Latency.Summary().ToString(), Report.Ratio(m.P99, bMax.Latency.PercentileMs(99)));
        report.Row("send->WS delivery, closed loop", md.ToString());
        report.Row("  delivered / sent", $"{maxDeliveries.Count} / {max.Completed}");
        report.Row("  messages per transaction (group commit)", Fmt.R(maxBatch, 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
        report.Figures["sends_per_second"] = Fmt.R(max.PerSecond);
        report.Figures["messages_per_transaction_closed_loop"] = Fmt.R(maxBatch, 1);
        report.Figures["sent"] = max.Completed;
        report.Figures["send_errors"] = max.Errors + (atRate?.Errors ?? 0);
        report.Figures["send_latency_closed_loop"] = m.ToJson();
        report.Figures["delivery_latency_closed_loop"] = md.ToJson();
        report.Figures["delivery_beyond_send_closed_loop"] = maxBeyond.Summary().ToJson();
        report.Figures["delivered_closed_loop"] = maxDeliveries.Count;
        report.Figures["cpu_cores_closed_loop"] = maxCpu.ToJson();
        report.Figures["service_rss_mb"] = Fmt.R(Common.Mb(rss));
        report.Figures["websockets_dropped"] = dropped;
        report.Baseline["requests_per_second"] = Fmt.R(bMax.PerSecond);
        report.Baseline["request_latency_closed_loop"] = bMax.Latency.Summary().ToJson();
        report.Ratios["sends_per_second"] = Fmt.R(Report.Ratio(max.PerSecond, bMax.PerSecond), 3);
        report.Ratios["send_p99_closed_loop"] = Fmt.R(Report.Ratio(m.P99, bMax.Latency.PercentileMs(99)), 2);

        if (atRate is not null && rateDeliveries is not null && rateBeyond is not null)
        {
            var r = atRate.Latency.Summary();
            var rd = rateDeliveries.Latency.Summary();
            var rb = rateBeyond.Summary();
            var br = bRate.Latency.Summary();
            var be = bEcho.Latency.Summary();
            report.Row($"achieved rate (target {o.Rate}/s)", Fmt.N(atRate.PerSecond), Fmt.N(bRate.PerSecond));
            report.Row($"send latency @ {o.Rate}/s", r.ToString(), br.ToString(), Report.Ratio(r.P99, br.P99), "p99 <= 25 ms", r.P99 <= 25);
            report.Row($"send->WS delivery @ {o.Rate}/s", rd.ToString(), be.ToString() + " (echo)", Report.Ratio(rd.P99, be.P99));
            report.Row($"  delivery beyond the send's answer", rb.ToString(), "", null, "p99 <= 10 ms", rb.P99 <= 10);
            report.Row("  delivered / sent", $"{rateDeliveries.Count} / {atRate.Completed}");
            report.Row("  messages per transaction (group commit)", Fmt.R(rateBatch ?? 0, 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
            report.Figures["messages_per_transaction_at_rate"] = Fmt.R(rateBatch ?? 0, 1);
            report.Figures["rate_achieved"] = Fmt.R(atRate.PerSecond);
            report.Figures["send_latency_at_rate"] = r.ToJson();
            report.Figures["delivery_latency_at_rate"] = rd.ToJson();
            report.Figures["delivery_beyond_send_at_rate"] = rb.ToJson();
            report.Figures["delivered_at_rate"] = rateDeliveries.Count;
            report.Figures["sent_at_rate"] = atRate.Completed;
            report.Baseline["request_latency_at_rate"] = br.ToJson();
            report.Baseline["echo_latency_at_rate"] = be.ToJson();
            report.Ratios["send_p99_at_rate"] = Fmt.R(Report.Ratio(r.P99, br.P99), 2);
            report.Ratios["delivery_p99_at_rate"] = Fmt.R(Report.Ratio(rd.P99, be.P99), 2);
        }
        report.Row("CPU cores, closed loop", maxCpu.ToString());
        if (rateCpu is not null)
        {
            report.Row($"CPU cores @ {o.Rate}/s", rateCpu.ToString());
            report.Figures["cpu_cores_at_rate"] = rateCpu.ToJson();
        }
        report.Row("errors / WebSockets dropped", $"{max.Errors + (atRate?.Errors ?? 0)} / {dropped}");
        if ((max.FirstError ?? atRate?.FirstError) is { } error)
        {
            report.Notes.Add("first error: " + error);
        }
        return report;
    }
}

/// <summary>Mean messages stored per transaction between two readings of the service's <c>chat_send_batch_size</c> histogram.</summary>
internal static class SendBatch
{
    public static double Between(Dictionary<string, double> before, Dictionary<string, double> after)
    {
        var transactions = after.GetValueOrDefault("chat_send_batch_size_count") - before.GetValueOrDefault("chat_send_batch_size_count");
        var messages = after.GetValueOrDefault("chat_send_batch_size_sum") - before.GetValueOrDefault("chat_send_batch_size_sum");
        return transactions > 0 ? messages / transactions : 0;
    }
}
