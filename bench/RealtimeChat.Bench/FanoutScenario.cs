using System.Diagnostics;
using System.Text;

namespace RealtimeChat.Bench;

public sealed record FanoutOptions
{
    public int Connections { get; init; } = 10_000;
    public int GroupSize { get; init; } = 1000;
    public double Rate { get; init; } = 120;
    public double Seconds { get; init; } = 20;
    public int ConnectParallel { get; init; } = 64;
    public double BaselineSeconds { get; init; } = 10;
}

/// <summary>W WebSockets spread over conversations of G members; each conversation's owner posts; every member receives.</summary>
public static class FanoutScenario
{
    public static async Task<Report> RunAsync(HarnessSettings settings, FanoutOptions o)
    {
        var log = settings.Log;
        var report = new Report("fanout");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["connections"] = o.Connections;
        report.Parameters["group_size"] = o.GroupSize;
        report.Parameters["rate"] = o.Rate;
        report.Parameters["seconds"] = o.Seconds;

        var groupCount = (o.Connections + o.GroupSize - 1) / o.GroupSize;
        var users = Enumerable.Range(0, o.Connections).Select(_ => User.New()).ToArray();
        int GroupOf(int user) => user / o.GroupSize;
        int SizeOf(int group) => Math.Min(o.GroupSize, o.Connections - group * o.GroupSize);

        await using var service = await ChatService.StartAsync(settings, [$"--Conversations:MaxMembers={Math.Max(o.GroupSize, 2)}"]);
        using var api = new ChatApi(service.BaseUrl, groupCount + 8);
        var owners = Enumerable.Range(0, groupCount).Select(g => users[g * o.GroupSize]).ToArray();
        var conversations = await Common.ParallelAsync(groupCount, 4, g => api.CreateGroupAsync(
            owners[g], $"fanout {g}", users.Skip(g * o.GroupSize + 1).Take(SizeOf(g) - 1).Select(u => u.Id)));
        Common.Say(log, $"{groupCount} conversations of up to {o.GroupSize} members created");

        await Task.Delay(2000);
        var rssBefore = service.Process.RssBytes();
        var sink = new FrameSink();
        var connectClock = Stopwatch.StartNew();
        var watchers = await Common.ParallelAsync(o.Connections, o.ConnectParallel, i => Watcher.ConnectAsync(service.BaseUrl, "/ws", users[i].Token, sink.OnFrame, CancellationToken.None));
        var connectRate = o.Connections / connectClock.Elapsed.TotalSeconds;
        await Task.Delay(3000);
        var rssConnected = service.Process.RssBytes();
        var perConnection = (rssConnected - rssBefore) / (double)o.Connections;
        Common.Say(log, $"{o.Connections} WebSockets open at {connectRate:0}/s; RSS {Common.Mb(rssBefore):0} -> {Common.Mb(rssConnected):0} MB");

        Task Send(int worker, long number, long timestamp, CancellationToken ct) =>
            api.SendAsync(owners[worker], conversations[worker], Marker.Make(timestamp, number), ct);

        // Warm-up: a couple of sends per conversation.
        sink.Begin();
        await Load.RunAsync(groupCount, Math.Min(o.Rate, groupCount * 2), TimeSpan.FromSeconds(1), Send);
        await sink.Current.SettleAsync(long.MaxValue, TimeSpan.FromSeconds(1));

        Common.Say(log, $"sending {o.Rate}/s for {o.Seconds} s");
        var deliveries = sink.Begin();
        var start = Stopwatch.GetTimestamp();
        var cpu = new CpuMeter(service.Process.Pid);
        var sends = await Load.RunAsync(groupCount, o.Rate, Common.Seconds(o.Seconds), Send);
        var expected = sends.Completed * o.GroupSize;
        await deliveries.SettleAsync(expected, TimeSpan.FromSeconds(3));
        var window = Stopwatch.GetElapsedTime(start, Math.Max(deliveries.LastArrival, start + 1));
        var cpuUse = cpu.Stop();
        var deliveriesPerSecond = deliveries.Count / window.TotalSeconds;
        var rssAfter = service.Process.RssBytes();
        var dropped = watchers.Count(w => w.Failure is not null);
        var frameLength = deliveries.LastLength;
        await Task.WhenAll(watchers.Select(w => w.DisposeAsync().AsTask()));

        // Baseline: the same number of sockets on the echo server, and a bare broadcast of a frame of the same size.
        Common.Say(log, "baseline");
        await using var baseline = await Baseline.StartAsync(settings);
        await Task.Delay(1000);
        var bRssBefore = baseline.RssBytes();
        var bSink = new FrameSink();
        var bClock = Stopwatch.StartNew();
        var bWatchers = await Common.ParallelAsync(o.Connections, o.ConnectParallel, i => Watcher.ConnectAsync(baseline.BaseUrl, $"/ws?group={GroupOf(i)}", null, bSink.OnFrame, CancellationToken.None));
        var bConnectRate = o.Connections / bClock.Elapsed.TotalSeconds;
        await Task.Delay(3000);
        var bPerConnection = (baseline.RssBytes() - bRssBefore) / (double)o.Connections;
        using var bApi = new ChatApi(baseline.BaseUrl, groupCount + 8);
        var padding = new string('x', Math.Max(0, frameLength - 60));
        var bDeliveries = bSink.Begin();
        var bStart = Stopwatch.GetTimestamp();
        var bSends = await Load.RunAsync(groupCount, o.Rate, Common.Seconds(Math.Min(o.BaselineSeconds, o.Seconds)), (w, n, ts, ct) =>
            bApi.PostOkAsync($"/broadcast/{w}", null, Encoding.UTF8.GetBytes($"{{\"data\":{{\"content\":\"{Marker.Make(ts, n)}\",\"pad\":\"{padding}\"}}}}"), ct));
        await bDeliveries.SettleAsync(bSends.Completed * o.GroupSize, TimeSpan.FromSeconds(3));
        var bWindow = Stopwatch.GetElapsedTime(bStart, Math.Max(bDeliveries.LastArrival, bStart + 1));
        var bDeliveriesPerSecond = bDeliveries.Count / bWindow.TotalSeconds;
        await Task.WhenAll(bWatchers.Select(w => w.DisposeAsync().AsTask()));

        var d = deliveries.Latency.Summary();
        var bd = bDeliveries.Latency.Summary();
        report.Row("WebSockets connected", $"{o.Connections - dropped} of {o.Connections}", "", null, "10,000", o.Connections >= 10_000 && dropped == 0);
        report.Row("connection set-up rate (/s)", Fmt.N(connectRate), Fmt.N(bConnectRate), Report.Ratio(connectRate, bConnectRate));
        report.Row("server memory per connection (KB)", Fmt.N(perConnection / 1024, "0.0"), Fmt.N(bPerConnection / 1024, "0.0"), Report.Ratio(perConnection, bPerConnection), "<= 30 KB", perConnection <= 30 * 1024);
        report.Row("sends/s achieved", Fmt.N(sends.PerSecond), Fmt.N(bSends.PerSecond));
        report.Row("deliveries/s", Fmt.N(deliveriesPerSecond), Fmt.N(bDeliveriesPerSecond), Report.Ratio(deliveriesPerSecond, bDeliveriesPerSecond), ">= 100,000", deliveriesPerSecond >= 100_000);
        report.Row("delivered / expected", $"{deliveries.Count} / {expected}", $"{bDeliveries.Count} / {bSends.Completed * o.GroupSize}");
        report.Row("send->WS delivery latency", d.ToString(), bd.ToString(), Report.Ratio(d.P99, bd.P99));
        report.Row("send latency", sends.Latency.Summary().ToString(), bSends.Latency.Summary().ToString());
        report.Row("service RSS before / connected / after (MB)", $"{Common.Mb(rssBefore):0} / {Common.Mb(rssConnected):0} / {Common.Mb(rssAfter):0}");
        report.Row("CPU cores while sending", cpuUse.ToString());
        report.Row("errors / WebSockets dropped", $"{sends.Errors} / {dropped}");
        report.Figures["connections"] = o.Connections;
        report.Figures["connect_per_second"] = Fmt.R(connectRate);
        report.Figures["memory_per_connection_kb"] = Fmt.R(perConnection / 1024, 2);
        report.Figures["rss_before_mb"] = Fmt.R(Common.Mb(rssBefore));
        report.Figures["rss_connected_mb"] = Fmt.R(Common.Mb(rssConnected));
        report.Figures["rss_after_mb"] = Fmt.R(Common.Mb(rssAfter));
        report.Figures["sends_per_second"] = Fmt.R(sends.PerSecond);
        report.Figures["sent"] = sends.Completed;
        report.Figures["deliveries_per_second"] = Fmt.R(deliveriesPerSecond);
        report.Figures["delivered"] = deliveries.Count;
        report.Figures["expected"] = expected;
        report.Figures["delivery_latency"] = d.ToJson();
        report.Figures["send_latency"] = sends.Latency.Summary().ToJson();
        report.Figures["send_errors"] = sends.Errors;
        report.Figures["websockets_dropped"] = dropped;
        report.Figures["cpu_cores"] = cpuUse.ToJson();
        report.Figures["frame_bytes"] = frameLength;
        report.Baseline["connect_per_second"] = Fmt.R(bConnectRate);
        report.Baseline["memory_per_connection_kb"] = Fmt.R(bPerConnection / 1024, 2);
        report.Baseline["deliveries_per_second"] = Fmt.R(bDeliveriesPerSecond);
        report.Baseline["delivery_latency"] = bd.ToJson();
        report.Ratios["connect_per_second"] = Fmt.R(Report.Ratio(connectRate, bConnectRate), 3);
        report.Ratios["memory_per_connection"] = Fmt.R(Report.Ratio(perConnection, bPerConnection), 2);
        report.Ratios["deliveries_per_second"] = Fmt.R(Report.Ratio(deliveriesPerSecond, bDeliveriesPerSecond), 3);
        report.Ratios["delivery_p99"] = Fmt.R(Report.Ratio(d.P99, bd.P99), 2);
        if (sends.FirstError is { } error)
        {
            report.Notes.Add("first error: " + error);
        }
        if (watchers.FirstOrDefault(w => w.Failure is not null)?.Failure is { } failure)
        {
            report.Notes.Add("first dropped WebSocket: " + failure);
        }
        return report;
    }
}
