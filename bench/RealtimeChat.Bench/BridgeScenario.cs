using System.Diagnostics;
using System.Text;
using MatrixEmulator;

namespace RealtimeChat.Bench;

public sealed record BridgeOptions
{
    public int Conversations { get; init; } = 16;
    public int Senders { get; init; } = 64;
    public double Rate { get; init; } = 1000;
    public double Seconds { get; init; } = 20;
    public double InboundSeconds { get; init; } = 10;
    public int InboundConcurrency { get; init; } = 1;
    public double BaselineSeconds { get; init; } = 5;
}

/// <summary>
/// The Matrix bridge against the in-process homeserver emulator (answering promptly): outbound, sends at a fixed rate
/// with the outbox draining; inbound, appservice transactions pushed to the service and turned into WebSocket events.
/// </summary>
public static class BridgeScenario
{
    public static async Task<Report> RunAsync(HarnessSettings settings, BridgeOptions o)
    {
        var log = settings.Log;
        var report = new Report("bridge");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["conversations"] = o.Conversations;
        report.Parameters["senders"] = o.Senders;
        report.Parameters["rate"] = o.Rate;
        report.Parameters["seconds"] = o.Seconds;
        report.Parameters["inbound_seconds"] = o.InboundSeconds;
        report.Parameters["inbound_concurrency"] = o.InboundConcurrency;

        var port = LoopbackPorts.Free();
        var registration = AppserviceRegistration.NovaChat(new Uri($"http://127.0.0.1:{port}"));
        await using var homeserver = await HomeserverEmulator.StartAsync(new EmulatorOptions { Appservice = registration, TimeScale = 0.01 });
        await using var service = await ChatService.StartAsync(settings,
        [
            "--Matrix:Enabled=true",
            "--Matrix:Mode=Appservice",
            $"--Matrix:HomeserverUrl={homeserver.BaseUrl}",
            $"--Matrix:ServerName={homeserver.ServerName}",
            $"--Matrix:AsToken={registration.AsToken}",
            $"--Matrix:HsToken={registration.HsToken}",
            "--Matrix:PollInterval=00:00:00.100",
            "--Matrix:MinRetryDelay=00:00:00.050",
            "--Matrix:MaxRetryDelay=00:00:01",
        ], port);
        using var api = new ChatApi(service.BaseUrl, o.Senders + 8);

        var senders = Enumerable.Range(0, o.Senders).Select(_ => User.New()).ToArray();
        var owners = Enumerable.Range(0, o.Conversations).Select(_ => User.New()).ToArray();
        var conversations = await Common.ParallelAsync(o.Conversations, 4, i => api.CreateGroupAsync(owners[i], $"bridge {i}", senders.Select(s => s.Id)));
        var sink = new FrameSink();
        var watchers = await Common.ParallelAsync(o.Conversations, 16, i => Watcher.ConnectAsync(service.BaseUrl, "/ws", owners[i].Token, sink.OnFrame, CancellationToken.None));

        // Rooms are created by the dispatcher; wait for all of them and an empty outbox.
        var rooms = new string[o.Conversations];
        var setup = Stopwatch.StartNew();
        while (true)
        {
            for (var i = 0; i < rooms.Length; i++)
            {
                rooms[i] ??= homeserver.ResolveAlias($"#nova_{conversations[i]:N}:{homeserver.ServerName}")!;
            }
            if (rooms.All(r => r is not null) && (await api.MetricsAsync()).GetValueOrDefault("matrix_outbox_pending") == 0)
            {
                break;
            }
            if (setup.Elapsed > TimeSpan.FromSeconds(120))
            {
                throw new TimeoutException($"Rooms not created after 2 minutes ({rooms.Count(r => r is not null)} of {rooms.Length}); the service printed:\n{service.Process.Tail()}");
            }
            await Task.Delay(100);
        }
        Common.Say(log, $"{o.Conversations} rooms bridged in {setup.Elapsed.TotalSeconds:0.0} s");

        Task Send(int worker, long number, long timestamp, CancellationToken ct) =>
            api.SendAsync(senders[worker % senders.Length], conversations[(int)((worker + number) % conversations.Length)], Marker.Make(timestamp, number), ct);

        // Outbound: sends at a fixed rate while sampling the outbox gauges.
        var wallAtStart = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var ticksAtStart = Stopwatch.GetTimestamp();
        var before = await api.MetricsAsync();
        var oldestAge = new Latency();
        var maxPending = 0.0;
        using var stopSampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stopSampling.IsCancellationRequested)
            {
                var metrics = await api.MetricsAsync();
                oldestAge.RecordMicros((long)(metrics.GetValueOrDefault("matrix_outbox_oldest_pending_seconds") * 1e6));
                maxPending = Math.Max(maxPending, metrics.GetValueOrDefault("matrix_outbox_pending"));
                try
                {
                    await Task.Delay(100, stopSampling.Token);
                }
                catch (OperationCanceledException)
                {
                }
            }
        });
        Common.Say(log, $"outbound: {o.Rate}/s for {o.Seconds} s");
        sink.Begin();
        var outCpu = new CpuMeter(service.Process.Pid);
        var sends = await Load.RunAsync(o.Senders, o.Rate, Common.Seconds(o.Seconds), Send);
        var outboundCpu = outCpu.Stop();
        var atEnd = await api.MetricsAsync();
        var drain = Stopwatch.StartNew();
        while ((await api.MetricsAsync()).GetValueOrDefault("matrix_outbox_pending") > 0 && drain.Elapsed < TimeSpan.FromSeconds(180))
        {
            await Task.Delay(100);
        }
        var drainSeconds = drain.Elapsed.TotalSeconds;
        await stopSampling.CancelAsync();
        await sampler;
        var after = await api.MetricsAsync();
        var sentInPhase = atEnd["matrix_messages_sent_total"] - before.GetValueOrDefault("matrix_messages_sent_total");
        var sentTotal = after["matrix_messages_sent_total"] - before.GetValueOrDefault("matrix_messages_sent_total");
        var matrixPerSecond = sentInPhase / sends.Elapsed.TotalSeconds;

        // Per message: from the intended send to the homeserver's origin_server_ts (millisecond resolution).
        var toHomeserver = new Latency();
        foreach (var room in rooms)
        {
            foreach (var evt in homeserver.Timeline(room))
            {
                if (evt.Type == "m.room.message" && evt.Body is { } body && Marker.TryParse(Encoding.UTF8.GetBytes("\"" + body), out var ts, out _) && ts >= ticksAtStart)
                {
                    var sentWallMs = wallAtStart + (ts - ticksAtStart) * 1000.0 / Stopwatch.Frequency;
                    toHomeserver.RecordMicros((long)((evt.OriginServerTs - sentWallMs) * 1000));
                }
            }
        }

        // Inbound: appservice transactions (one event each) pushed as Synapse would, one at a time unless asked otherwise.
        Common.Say(log, $"inbound: transactions for {o.InboundSeconds} s, {o.InboundConcurrency} at a time");
        var txnRun = Guid.NewGuid().ToString("N")[..8];
        byte[] Transaction(int worker, long number, long timestamp) => Encoding.UTF8.GetBytes(
            $"{{\"events\":[{{\"type\":\"m.room.message\",\"room_id\":\"{rooms[number % rooms.Length]}\",\"sender\":\"@bench_ext{worker % 8}:{homeserver.ServerName}\"," +
            $"\"event_id\":\"$bench{txnRun}_{number}\",\"origin_server_ts\":{DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()},\"content\":{{\"msgtype\":\"m.text\",\"body\":\"{Marker.Make(timestamp, number)}\"}}}}]}}");
        Task Push(int worker, long number, long timestamp, CancellationToken ct) =>
            api.PostOkAsync($"/transactions/{txnRun}_{number}?access_token={registration.HsToken}", null, Transaction(worker, number, timestamp), ct, HttpMethod.Put);
        sink.Begin();
        await Load.RunAsync(o.InboundConcurrency, 0, TimeSpan.FromSeconds(1), Push);
        await sink.Current.SettleAsync(long.MaxValue, TimeSpan.FromSeconds(1));
        var inbound = sink.Begin();
        var inCpu = new CpuMeter(service.Process.Pid);
        var txns = await Load.RunAsync(o.InboundConcurrency, 0, Common.Seconds(o.InboundSeconds), Push);
        var inboundCpu = inCpu.Stop();
        await inbound.SettleAsync(txns.Completed, TimeSpan.FromSeconds(3));
        var dropped = watchers.Count(w => w.Failure is not null);
        await Task.WhenAll(watchers.Select(w => w.DisposeAsync().AsTask()));

        Common.Say(log, "baseline");
        await using var baseline = await Baseline.StartAsync(settings);
        var bSeconds = Common.Seconds(o.BaselineSeconds);
        var (bTxn, _) = await Common.BaselineRequestsAsync(baseline, o.InboundConcurrency, 0, bSeconds, HttpMethod.Put);
        var (_, bRate) = await Common.BaselineRequestsAsync(baseline, o.Senders, o.Rate, bSeconds);
        var bEcho = await Common.BaselineEchoAsync(baseline, 1, 1, Math.Max(1, txns.PerSecond), bSeconds);

        var lag = oldestAge.Summary();
        var hs = toHomeserver.Summary();
        var tx = txns.Latency.Summary();
        var tw = inbound.Latency.Summary();
        report.Row($"sends/s achieved (target {o.Rate}/s)", Fmt.N(sends.PerSecond), Fmt.N(bRate.PerSecond));
        report.Row("send latency", sends.Latency.Summary().ToString(), bRate.Latency.Summary().ToString(), Report.Ratio(sends.Latency.PercentileMs(99), bRate.Latency.PercentileMs(99)));
        report.Row("Matrix-bound events/s (during the sends)", Fmt.N(matrixPerSecond));
        report.Row("outbox oldest pending age, sampled every 100 ms", lag.ToString(), "", null, "p99 <= 1000 ms", lag.P99 <= 1000);
        report.Row("send -> homeserver event (origin_server_ts)", hs.ToString());
        report.Row("max pending / drain after the sends (s)", $"{maxPending:0} / {drainSeconds:0.0}");
        report.Row("Matrix events sent / app messages sent", $"{sentTotal:0} / {sends.Completed}");
        report.Row($"appservice transactions/s ({o.InboundConcurrency} in flight)", Fmt.N(txns.PerSecond), Fmt.N(bTxn.PerSecond), Report.Ratio(txns.PerSecond, bTxn.PerSecond));
        report.Row("transaction answer latency", tx.ToString(), bTxn.Latency.Summary().ToString(), Report.Ratio(tx.P99, bTxn.Latency.PercentileMs(99)));
        report.Row("transaction -> WS event", tw.ToString(), bEcho.Latency.Summary() + " (echo)", Report.Ratio(tw.P99, bEcho.Latency.PercentileMs(99)), "p99 <= 20 ms", tw.P99 <= 20);
        report.Row("  WS events / transactions", $"{inbound.Count} / {txns.Completed}");
        report.Row("CPU cores, outbound (client includes the emulator)", outboundCpu.ToString());
        report.Row("CPU cores, inbound", inboundCpu.ToString());
        report.Figures["cpu_cores_outbound"] = outboundCpu.ToJson();
        report.Figures["cpu_cores_inbound"] = inboundCpu.ToJson();
        report.Row("errors (sends / transactions) / WebSockets dropped", $"{sends.Errors} / {txns.Errors} / {dropped}");
        report.Figures["sends_per_second"] = Fmt.R(sends.PerSecond);
        report.Figures["send_latency"] = sends.Latency.Summary().ToJson();
        report.Figures["matrix_events_per_second"] = Fmt.R(matrixPerSecond);
        report.Figures["outbox_oldest_pending_age"] = lag.ToJson();
        report.Figures["send_to_homeserver"] = hs.ToJson();
        report.Figures["outbox_max_pending"] = maxPending;
        report.Figures["outbox_drain_seconds"] = Fmt.R(drainSeconds, 2);
        report.Figures["matrix_events_sent"] = sentTotal;
        report.Figures["app_messages_sent"] = sends.Completed;
        report.Figures["transactions_per_second"] = Fmt.R(txns.PerSecond);
        report.Figures["transactions"] = txns.Completed;
        report.Figures["transaction_latency"] = tx.ToJson();
        report.Figures["transaction_to_websocket"] = tw.ToJson();
        report.Figures["websocket_events_from_transactions"] = inbound.Count;
        report.Figures["errors"] = sends.Errors + txns.Errors;
        report.Baseline["request_latency_at_rate"] = bRate.Latency.Summary().ToJson();
        report.Baseline["put_per_second"] = Fmt.R(bTxn.PerSecond);
        report.Baseline["put_latency"] = bTxn.Latency.Summary().ToJson();
        report.Baseline["echo_latency"] = bEcho.Latency.Summary().ToJson();
        report.Ratios["transactions_per_second"] = Fmt.R(Report.Ratio(txns.PerSecond, bTxn.PerSecond), 3);
        report.Ratios["transaction_to_websocket_p99"] = Fmt.R(Report.Ratio(tw.P99, bEcho.Latency.PercentileMs(99)), 2);
        report.Ratios["send_p99"] = Fmt.R(Report.Ratio(sends.Latency.PercentileMs(99), bRate.Latency.PercentileMs(99)), 2);
        if ((sends.FirstError ?? txns.FirstError) is { } error)
        {
            report.Notes.Add("first error: " + error);
        }
        report.Notes.Add("the homeserver emulator runs inside the benchmark process (client side) and answers without delay");
        return report;
    }
}
