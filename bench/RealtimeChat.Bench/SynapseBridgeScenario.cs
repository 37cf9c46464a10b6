using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace RealtimeChat.Bench;

public sealed record SynapseBridgeOptions
{
    public int Rooms { get; init; } = 8;
    public int Messages { get; init; } = 50;
    public double OutageSeconds { get; init; } = 10;
    public int WarmupMessages { get; init; } = 10;
    public int MaxWarmupRounds { get; init; } = 15;
    public string? SynapseScript { get; init; }
    public bool IsolateSynapse { get; init; }

    /// <summary>How many times every phase runs, each round in a rotated order; a phase's figures pool its rounds.</summary>
    public int Rounds { get; init; } = 3;
}

/// <summary>
/// The bridge against a real Synapse 1.67 (<c>../shared/synapse</c>), side by side with a plain appservice client on the
/// same homeserver in the same run: R rooms × M messages (a) posted to the service's REST API and sent by its bridge,
/// steady (all posted at once, then paced at twice the direct rate) and as a backlog after an outage; (b) sent directly as ghost users with <c>PUT /send</c>, R rooms at a time,
/// each room in order (what the bridge does). Both are timed until a Matrix user's <c>/sync</c> has shown every event.
/// </summary>
public static class SynapseBridgeScenario
{
    public static async Task<Report> RunAsync(HarnessSettings settings, SynapseBridgeOptions o)
    {
        var log = settings.Log;
        var report = new Report("synapse-bridge");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["rooms"] = o.Rooms;
        report.Parameters["messages_per_room"] = o.Messages;
        report.Parameters["outage_seconds"] = o.OutageSeconds;
        report.Parameters["warmup_messages_per_room"] = o.WarmupMessages;
        report.Parameters["max_warmup_rounds"] = o.MaxWarmupRounds;
        report.Parameters["isolate_synapse"] = o.IsolateSynapse;
        report.Parameters["rounds"] = o.Rounds;
        var cores = o.IsolateSynapse ? CoreSplit.Create() : null;
        var total = o.Rooms * o.Messages;

        var script = o.SynapseScript ?? Synapse.Locate() ?? throw new InvalidOperationException(
            "No synapse.sh: pass --synapse-sh, set CHAT_BENCH_SYNAPSE_SH, or provide ../shared/synapse beside the repository.");
        report.Parameters["synapse"] = script;

        // The bridge's registration comes from the service's own `registration` command; the direct client is a second
        // appservice with its own namespace, whose pushes go to an in-process sink answering {} at once.
        var port = LoopbackPorts.Free();
        var serviceUrl = new Uri($"http://127.0.0.1:{port}");
        var (asToken, hsToken) = (NewToken(), NewToken());
        var serverName = Environment.GetEnvironmentVariable("SYNAPSE_SERVER_NAME") is { Length: > 0 } n ? n : "localhost";
        var matrixArgs = new List<string>
        {
            "--Matrix:Enabled=true", "--Matrix:Mode=Appservice", $"--Matrix:ServerName={serverName}",
            $"--Matrix:AppserviceUrl={serviceUrl}", $"--Matrix:AsToken={asToken}", $"--Matrix:HsToken={hsToken}",
        };
        // With the service's extra settings too, as an operator generates it from the configuration the service runs with.
        var bridgeRegistration = await RegistrationAsync(settings.ServiceDll, [.. matrixArgs, "--Matrix:HomeserverUrl=http://127.0.0.1:8008", .. settings.ExtraServiceArgs]);
        await using var sink = await TransactionSink.StartAsync();
        var directAsToken = NewToken();
        var directRegistration = string.Join('\n',
            "id: bench-direct", $"url: {sink.Url}", $"as_token: {directAsToken}", $"hs_token: {NewToken()}",
            "sender_localpart: bench-direct-bot", "rate_limited: false", "namespaces:",
            "  users:", "  - exclusive: true", $"    regex: '@benchdirect_.*:{serverName}'",
            "  aliases: []", "  rooms: []", "");

        await using var synapse = await Synapse.StartAsync(script, log, bridgeRegistration, directRegistration);
        Common.Say(log, $"Synapse pid {synapse.Pid} on {synapse.Url}");
        await using var service = await ChatService.StartAsync(settings, [.. matrixArgs, $"--Matrix:HomeserverUrl={synapse.Url}"], port);
        if (cores is not null)
        {
            await cores.ApplyAsync(synapse.Pid, service.Process.Pid, settings.Postgres);
            Common.Say(log, $"Synapse on CPU mask {cores.Synapse:x}; the service, PostgreSQL and this client on {cores.Others:x}");
        }
        using var api = new ChatApi(service.BaseUrl, o.Rooms + 8);
        int? postmaster = settings.Postgres is { } postgres ? await CoreSplit.PostmasterAsync(postgres) : null;
        using var bridgeBot = new Matrix(synapse.Url, asToken);
        using var directBot = new Matrix(synapse.Url, directAsToken);

        // The observer: a Matrix user in every room whose /sync shows when an event is in Synapse.
        await synapse.RunAsync("user", synapse.Directory, "observer", "observerpass");
        using var observer = await Matrix.LoginAsync(synapse.Url, "observer", "observerpass");
        var observerId = $"@observer:{serverName}";

        // (a) set-up: R conversations, one app user each; their rooms made by the bridge, the observer joined.
        var owners = Enumerable.Range(0, o.Rooms).Select(_ => User.New()).ToArray();
        var conversations = await Common.ParallelAsync(o.Rooms, 4, i => api.CreateGroupAsync(owners[i], $"synapse bench {i}", []));
        var bridgeRooms = await Common.ParallelAsync(o.Rooms, 4, async i =>
        {
            var room = await Until(() => bridgeBot.ResolveAliasAsync($"#nova_{conversations[i]:N}:{serverName}"), "the bridge's room", TimeSpan.FromSeconds(120));
            await Retry(() => bridgeBot.PostAsync($"/_matrix/client/v3/rooms/{Uri.EscapeDataString(room)}/invite", new JsonObject { ["user_id"] = observerId }));
            await observer.PostAsync($"/_matrix/client/v3/join/{Uri.EscapeDataString(room)}", new JsonObject());
            return room;
        });
        await Until(async () => (await api.MetricsAsync()).GetValueOrDefault("matrix_outbox_pending") == 0 ? "idle" : null, "the bridge's set-up", TimeSpan.FromSeconds(120));

        // (b) set-up: R ghosts of the direct client, each in a room of its own with the observer.
        var ghosts = Enumerable.Range(0, o.Rooms).Select(i => $"@benchdirect_{i}:{serverName}").ToArray();
        var directRooms = await Common.ParallelAsync(o.Rooms, 4, async i =>
        {
            await directBot.PostAsync("/_matrix/client/v3/register", new JsonObject { ["type"] = "m.login.application_service", ["username"] = $"benchdirect_{i}" });
            var created = await directBot.PostAsync($"/_matrix/client/v3/createRoom?user_id={Uri.EscapeDataString(ghosts[i])}",
                new JsonObject { ["preset"] = "private_chat", ["invite"] = new JsonArray(observerId), ["name"] = $"direct {i}" });
            var room = (string)created["room_id"]!;
            await observer.PostAsync($"/_matrix/client/v3/join/{Uri.EscapeDataString(room)}", new JsonObject());
            return room;
        });
        Common.Say(log, $"{o.Rooms} bridged rooms and {o.Rooms} direct rooms ready");

        await using var watch = await SyncWatch.StartAsync(observer);
        var run = Guid.NewGuid().ToString("N")[..6];

        // Each room's app user on a WebSocket: when a Matrix user's message reaches the app (the inbound phase).
        var appSeen = new ConcurrentDictionary<long, long>();
        var sockets = await Common.ParallelAsync(o.Rooms, 4, i => Watcher.ConnectAsync(service.BaseUrl, "/ws", owners[i].Token, (frame, at) =>
        {
            if (frame.IndexOf("\"message.new\""u8) >= 0 && Marker.TryParse(frame, out _, out var number))
            {
                appSeen.TryAdd(number, at);
            }
        }, CancellationToken.None));
        var inboundNumber = 0L;

        // R rooms at once, each room in order: through the app (REST posts, which its bridge sends on) or directly.
        Task PostAsync(string prefix, int messages) => Task.WhenAll(Enumerable.Range(0, o.Rooms).Select(async i =>
        {
            for (var m = 0; m < messages; m++)
            {
                await api.SendAsync(owners[i], conversations[i], $"{prefix}:{i}:{m}", CancellationToken.None);
            }
        }));
        Task SendDirectAsync(string prefix, int messages) => Task.WhenAll(Enumerable.Range(0, o.Rooms).Select(async i =>
        {
            for (var m = 0; m < messages; m++)
            {
                await directBot.PutAsync(
                    $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(directRooms[i])}/send/m.room.message/{prefix}-{i}-{m}?user_id={Uri.EscapeDataString(ghosts[i])}",
                    new JsonObject { ["msgtype"] = "m.text", ["body"] = $"{prefix}:{i}:{m}" });
            }
        }));

        // A service in production is warm; this one has just started. For its first thousands of requests it compiles its
        // hot paths again and again (tier 0, instrumented, tier 1): up to 0.7 of a core here, which would be charged to the
        // first timed phases and taken from Synapse on a 2-core machine. So the warm-up repeats until compiling takes under
        // 2 % of a round (read from the service's own runtime metrics); each phase's compiling is shown in the table.
        // The direct client runs in this process, warm from the set-up.
        var warmupRounds = 0;
        var warmupJitShare = double.NaN;
        var warmupJit = 0.0;
        while (o.WarmupMessages > 0 && warmupRounds < o.MaxWarmupRounds && !(warmupJitShare <= 0.02))
        {
            warmupRounds++;
            var jitBefore = await JitSecondsAsync(api);
            var started = Stopwatch.GetTimestamp();
            await TimeAsync(watch, $"w{warmupRounds}a{run}", o.Rooms * o.WarmupMessages, prefix => PostAsync(prefix, o.WarmupMessages));
            await TimeAsync(watch, $"w{warmupRounds}d{run}", o.Rooms * o.WarmupMessages, prefix => SendDirectAsync(prefix, o.WarmupMessages));
            // Tier-1 compilations run in the background shortly after the calls that asked for them.
            await Task.Delay(TimeSpan.FromSeconds(1));
            var jit = await JitSecondsAsync(api) - jitBefore;
            warmupJit += jit;
            warmupJitShare = jit / Stopwatch.GetElapsedTime(started).TotalSeconds;
            Common.Say(log, $"warm-up round {warmupRounds}: {o.WarmupMessages} messages per room each way, untimed; the service compiled for {jit:0.00} s ({warmupJitShare:P1} of the round)");
        }

        // Synapse's store, PostgreSQL and the service's data share this machine's disk, whose flushes stall now and then
        // for up to seconds (docs/performance.md, noisy-neighbour); each phase shows how much of it was stalled.
        using var flushProbe = new DiskFlushProbe(10);

        // logFrom: where Synapse's log is read from, when that is before the phase's timing starts.
        async Task<PhaseRun> PhaseAsync(string name, string what, string prefix, Func<string, Task> send, DateTime? logFrom = null)
        {
            Common.Say(log, $"{name}: {what}");
            var cpu = await PhaseCpuMeter.StartAsync(synapse.Pid, service.Process.Pid, postmaster, api);
            var (from, started) = (logFrom ?? DateTime.UtcNow, Stopwatch.GetTimestamp());
            var timed = await TimeAsync(watch, prefix, total, send);
            var (to, ended) = (DateTime.UtcNow, Stopwatch.GetTimestamp());
            var use = await cpu.StopAsync();
            Common.Say(log, $"{name}: {timed.PerSecond:0.0} events/s");
            return new PhaseRun(timed, use, from, to, flushProbe.StallsDuring(started, ended));
        }

        // Steady: every message posted to the REST API as fast as it answers (each room in order), timed until the
        // observer has seen the last one. The posts finish long before the bridge does, so this is the bridge's rate.
        Task<PhaseRun> BridgeAsync(int round) =>
            PhaseAsync($"round {round}, bridge", $"{total} messages via the REST API", $"a{round}x{run}", prefix => PostAsync(prefix, o.Messages));

        // Direct: the same rooms x messages as PUT /send by the ghosts, R rooms at a time, each room in order.
        Task<PhaseRun> DirectAsync(int round) =>
            PhaseAsync($"round {round}, direct", $"{total} PUT /send by a plain appservice client", $"d{round}x{run}", prefix => SendDirectAsync(prefix, o.Messages));

        // Paced: the same load, each room's posts spread over the phase at twice the direct client's rate (its rounds so
        // far). App users post over time rather than 400 messages in 3 s; spread out, the app's own work fits beside
        // Synapse on a small machine instead of taking the cycles Synapse needs in one burst. Posts still arrive faster
        // than Synapse takes them, so what is timed is still the bridge's rate.
        Task<PhaseRun> PacedAsync(int round, double directPerSecond)
        {
            var pacing = TimeSpan.FromSeconds(o.Rooms / (2 * Math.Max(directPerSecond, 1)));
            return PhaseAsync($"round {round}, bridge, paced", $"{total} messages via the REST API, each room one every {pacing.TotalMilliseconds:0} ms", $"p{round}x{run}",
                prefix => Task.WhenAll(Enumerable.Range(0, o.Rooms).Select(async i =>
                {
                    // Rooms staggered across one interval, so the posts are spread evenly rather than in waves of R.
                    var start = Stopwatch.GetTimestamp();
                    for (var m = 0; m < o.Messages; m++)
                    {
                        if (pacing * (m + (double)i / o.Rooms) - Stopwatch.GetElapsedTime(start) is { Ticks: > 0 } due)
                        {
                            await Task.Delay(due);
                        }
                        await api.SendAsync(owners[i], conversations[i], $"{prefix}:{i}:{m}", CancellationToken.None);
                    }
                })));
        }

        // Backlog: Synapse stopped, the same load posted, Synapse started; timed from when it answers again.
        async Task<PhaseRun> BacklogAsync(int round)
        {
            Common.Say(log, $"round {round}, bridge backlog: Synapse stopped for {o.OutageSeconds} s while {total} messages are posted");
            await synapse.RunAsync("stop", synapse.Directory);
            var outage = Stopwatch.StartNew();
            var prefix = $"b{round}x{run}";
            await PostAsync(prefix, o.Messages);
            if (TimeSpan.FromSeconds(o.OutageSeconds) - outage.Elapsed is { Ticks: > 0 } rest)
            {
                await Task.Delay(rest);
            }
            // Synapse's log counts from its start: the bridge may send before that call returns.
            var from = DateTime.UtcNow;
            await synapse.RunAsync("start", synapse.Directory);
            if (cores is not null)
            {
                await cores.ApplyAsync(synapse.Pid, service.Process.Pid, settings.Postgres);
            }
            var drained = await PhaseAsync($"round {round}, backlog", "Synapse answers again", prefix, _ => Task.CompletedTask, logFrom: from);
            Common.Say(log, $"round {round}, backlog: first event after {drained.Timed.FirstSeconds:0.0} s");
            return drained;
        }

        // Inbound: the observer, a Matrix user in every bridged room, writes M messages per room, the rooms together at half
        // the direct client's rate (so Synapse is not the queue), each message's text its send time. Two latencies per
        // message from that time: until the observer's own /sync shows it (Synapse delivering to a client, the baseline)
        // and until the app user's WebSocket has it (Synapse pushing to the bridge, the bridge reading the room when
        // Matrix:ReadRoomTimelines is on, storing and fanning out).
        async Task<InboundRun> InboundAsync(string name, int messages, double directPerSecond)
        {
            var pacing = TimeSpan.FromSeconds(o.Rooms / (0.5 * Math.Max(directPerSecond, 1)));
            Common.Say(log, $"{name}: {o.Rooms * messages} messages by a Matrix user, each room one every {pacing.TotalMilliseconds:0} ms");
            var readsBefore = (await api.MetricsAsync()).GetValueOrDefault("matrix_room_timeline_reads_total");
            var pushesBefore = await PushHandlingAsync(api);
            var cpu = await PhaseCpuMeter.StartAsync(synapse.Pid, service.Process.Pid, postmaster, api);
            var sent = new ConcurrentBag<(long Number, long At, string Body)>();
            await Task.WhenAll(Enumerable.Range(0, o.Rooms).Select(async i =>
            {
                var start = Stopwatch.GetTimestamp();
                for (var m = 0; m < messages; m++)
                {
                    if (pacing * (m + (double)i / o.Rooms) - Stopwatch.GetElapsedTime(start) is { Ticks: > 0 } due)
                    {
                        await Task.Delay(due);
                    }
                    var number = Interlocked.Increment(ref inboundNumber);
                    var at = Stopwatch.GetTimestamp();
                    var body = Marker.Make(at, number);
                    await observer.PutAsync($"/_matrix/client/v3/rooms/{Uri.EscapeDataString(bridgeRooms[i])}/send/m.room.message/in{run}{number}",
                        new JsonObject { ["msgtype"] = "m.text", ["body"] = body });
                    sent.Add((number, at, body));
                }
            }));
            for (var waited = Stopwatch.StartNew(); waited.Elapsed < TimeSpan.FromSeconds(60); await Task.Delay(20))
            {
                if (sent.All(s => appSeen.ContainsKey(s.Number) && watch.TryFirstSeen(s.Body, out _)))
                {
                    break;
                }
            }
            var use = await cpu.StopAsync();
            var reads = (int)((await api.MetricsAsync()).GetValueOrDefault("matrix_room_timeline_reads_total") - readsBefore);
            var pushesAfter = await PushHandlingAsync(api);
            var result = new InboundRun(new Latency(), new Latency(), new Latency(), use, sent.Count, 0, reads,
                (int)(pushesAfter.Count - pushesBefore.Count), pushesAfter.Seconds - pushesBefore.Seconds);
            foreach (var (number, at, body) in sent)
            {
                var inSync = watch.TryFirstSeen(body, out var synced);
                var inApp = appSeen.TryGetValue(number, out var arrived);
                if (inSync)
                {
                    result.Synapse.RecordTicks(synced - at);
                }
                if (inApp)
                {
                    result.App.RecordTicks(arrived - at);
                    result.Beyond.RecordTicks(Math.Max(0, arrived - (inSync ? synced : at)));
                }
                else
                {
                    result = result with { Missing = result.Missing + 1 };
                }
            }
            Common.Say(log, $"{name}: app p50 {result.App.PercentileMs(50):0.0} ms, Synapse's own /sync p50 {result.Synapse.PercentileMs(50):0.0} ms");
            return result;
        }

        // Synapse's pace changes over a run (its store grows, its caches fill, each round's outage empties them, and the
        // disk stalls now and then): the direct client alone did 29-53 events/s in rounds a minute apart. So every phase
        // runs once per round, the three with Synapse up each taking its turn to go first (bridge, direct,
        // paced; then direct, paced, bridge; ...), and a phase's figures pool its rounds. The direct client always runs
        // before the first paced phase, whose pacing it sets.
        var (bridge, direct, paced, backlog) = (new Phase(), new Phase(), new Phase(), new Phase());
        var inbound = new List<InboundRun>();
        if (o.WarmupMessages > 0)
        {
            // The inbound path is not on the way of the other phases: warm it apart, untimed.
            await InboundAsync("inbound warm-up", o.WarmupMessages, 40);
        }
        for (var round = 1; round <= o.Rounds; round++)
        {
            for (var turn = 0; turn < 3; turn++)
            {
                switch ((round - 1 + turn) % 3)
                {
                    case 0:
                        bridge.Add(await BridgeAsync(round));
                        break;
                    case 1:
                        direct.Add(await DirectAsync(round));
                        break;
                    default:
                        paced.Add(await PacedAsync(round, direct.PerSecond));
                        break;
                }
            }
            inbound.Add(await InboundAsync($"round {round}, inbound", o.Messages, direct.PerSecond));
            backlog.Add(await BacklogAsync(round));
        }
        foreach (var socket in sockets)
        {
            await socket.DisposeAsync();
        }

        var duplicates = watch.Duplicates();
        var expected = total * o.Rounds;
        var phases = new[] { bridge, direct, paced, backlog };
        string PerRound(Phase phase) => string.Join(", ", phase.RatiosTo(direct).Select(r => Fmt.N(r, "0.00")));
        report.Row("events/s, bridge (REST -> Synapse, seen by /sync)", Fmt.N(bridge.PerSecond, "0.0"), Fmt.N(direct.PerSecond, "0.0"), Report.Ratio(bridge.PerSecond, direct.PerSecond), ">= 0.9x", bridge.PerSecond >= 0.9 * direct.PerSecond);
        report.Row("  per round, over the same round's direct client", PerRound(bridge));
        report.Row("events/s, bridge, posts paced at 2x the direct rate", Fmt.N(paced.PerSecond, "0.0"), Fmt.N(direct.PerSecond, "0.0"), Report.Ratio(paced.PerSecond, direct.PerSecond), ">= 0.9x", paced.PerSecond >= 0.9 * direct.PerSecond);
        report.Row("  per round, over the same round's direct client", PerRound(paced));
        report.Row($"events/s, bridge draining a backlog after {o.OutageSeconds:0} s down", Fmt.N(backlog.PerSecond, "0.0"), Fmt.N(direct.PerSecond, "0.0"), Report.Ratio(backlog.PerSecond, direct.PerSecond), ">= 0.9x", backlog.PerSecond >= 0.9 * direct.PerSecond);
        report.Row("  per round, over the same round's direct client", PerRound(backlog));
        report.Row("  backlog: first event after Synapse answered, per round (s)", string.Join(", ", backlog.Runs.Select(r => Fmt.N(r.Timed.FirstSeconds, "0.0"))));
        report.Row("seconds until all events seen, all rounds (bridge / direct / paced / backlog)", $"{bridge.Seconds:0.0} / {direct.Seconds:0.0} / {paced.Seconds:0.0} / {backlog.Seconds:0.0}");
        report.Row("events seen / expected (bridge, direct, paced, backlog)", $"{bridge.Seen} / {direct.Seen} / {paced.Seen} / {backlog.Seen} of {expected} each");
        report.Row("duplicate events seen", duplicates.Count.ToString(CultureInfo.InvariantCulture));
        var (inApp, inSync, beyond) = (new Latency(), new Latency(), new Latency());
        foreach (var r in inbound)
        {
            inApp.Add(r.App);
            inSync.Add(r.Synapse);
            beyond.Add(r.Beyond);
        }
        var (appSummary, syncSummary) = (inApp.Summary(), inSync.Summary());
        report.Row("inbound: Matrix user's send -> app WebSocket, ms (p50 / p99 / p99.9 / max)", appSummary.ToString(), syncSummary.ToString(),
            Report.Ratio(appSummary.P50, syncSummary.P50));
        report.Row("  baseline: the same messages in the sender's own /sync; ratio of p99s", Fmt.N(Report.Ratio(appSummary.P99, syncSummary.P99), "0.00"));
        report.Row("  app WebSocket after the /sync, per message, ms (p50 / p99 / p99.9 / max)", beyond.Summary().ToString());
        report.Row("  per round, p50 app / p50 /sync", string.Join(", ", inbound.Select(r => Fmt.N(Report.Ratio(r.App.PercentileMs(50), r.Synapse.PercentileMs(50)), "0.00"))));
        report.Row("  messages not in the app after 60 s", inbound.Sum(r => r.Missing).ToString(CultureInfo.InvariantCulture));
        report.Row("  rooms the bridge read from their timeline, per round", string.Join(", ", inbound.Select(r => r.TimelineReads)));
        var (pushes, pushSeconds) = (inbound.Sum(r => r.Pushes), inbound.Sum(r => r.PushSeconds));
        var pushMs = pushes > 0 ? pushSeconds * 1000 / pushes : double.NaN;
        report.Row("  pushes Synapse made to the service; mean ms the service took to answer one", $"{pushes}; {Fmt.N(pushMs, "0.0")}");
        report.Figures["inbound_pushes"] = pushes;
        report.Figures["inbound_push_handling_ms"] = Fmt.R(pushMs, 2);
        var inboundUse = PhaseCpu.Pool(inbound.Select(r => r.Use));
        var inboundEvents = inbound.Sum(r => r.Sent);
        report.Row("  CPU cores, inbound", inboundUse.ToString());
        report.Row("  Synapse CPU per inbound message, ms; service + PostgreSQL + client", $"{Fmt.N(inboundUse.SynapseMsPer(inboundEvents), "0.0")}; {Fmt.N(inboundUse.OthersMsPer(inboundEvents), "0.0")}");
        report.Figures["inbound_app_ms"] = appSummary.ToJson();
        report.Figures["inbound_sync_ms"] = syncSummary.ToJson();
        report.Figures["inbound_missing"] = inbound.Sum(r => r.Missing);
        report.Figures["inbound_timeline_reads"] = inbound.Sum(r => r.TimelineReads);
        report.Figures["inbound_synapse_cpu_ms_per_message"] = Fmt.R(inboundUse.SynapseMsPer(inboundEvents), 2);
        report.Ratios["inbound_app_vs_sync_p50"] = Fmt.R(Report.Ratio(appSummary.P50, syncSummary.P50), 3);
        report.Ratios["inbound_app_vs_sync_p99"] = Fmt.R(Report.Ratio(appSummary.P99, syncSummary.P99), 3);
        report.Row($"disk flush stalled (> {DiskFlushProbe.StallThreshold.TotalMilliseconds:0} ms), s per s (bridge / direct / paced / backlog)",
            string.Join(" / ", phases.Select(p => Fmt.N(p.DiskStalledShare, "0.00"))));
        report.Row("  worst flush per round, ms (bridge; direct; paced; backlog)",
            string.Join("; ", phases.Select(p => string.Join(", ", p.Runs.Select(r => Fmt.N(r.DiskWorstMs))))));
        var (bridgeUse, directUse, pacedUse, backlogUse) = (bridge.Use, direct.Use, paced.Use, backlog.Use);
        report.Row("CPU cores, bridge steady", bridgeUse.ToString());
        report.Row("CPU cores, direct", directUse.ToString());
        report.Row("CPU cores, paced", pacedUse.ToString());
        report.Row("CPU cores, backlog", backlogUse.ToString());
        // What the cores Synapse waits for are spent on: everything but Synapse, per event of the phase.
        var othersPerEvent = new[] { bridgeUse.OthersMsPer(bridge.Seen), directUse.OthersMsPer(direct.Seen), pacedUse.OthersMsPer(paced.Seen), backlogUse.OthersMsPer(backlog.Seen) };
        report.Row("service + PostgreSQL + client CPU per event, ms (bridge / direct / paced / backlog)", string.Join(" / ", othersPerEvent.Select(ms => Fmt.N(ms, "0.0"))));
        report.Figures["others_cpu_ms_per_event"] = new JsonObject
        {
            ["bridge"] = Fmt.R(othersPerEvent[0], 2), ["direct"] = Fmt.R(othersPerEvent[1], 2), ["paced"] = Fmt.R(othersPerEvent[2], 2), ["backlog"] = Fmt.R(othersPerEvent[3], 2),
        };
        report.Row("warm-up rounds until the service compiled under 2 % of a round", warmupRounds == 0
            ? "none (started cold)"
            : $"{warmupRounds}, last {warmupJitShare:P1}" + (warmupJitShare <= 0.02 ? "" : " (still compiling: not warm)"));
        var uses = new[] { bridgeUse, directUse, pacedUse, backlogUse };
        report.Row("service compiling code (JIT), cores (bridge / direct / paced / backlog)",
            string.Join(" / ", uses.Select(u => Fmt.N(u.ServiceJit, "0.00"))));
        report.Figures["rounds"] = o.Rounds;
        report.Figures["warmup_rounds"] = warmupRounds;
        report.Figures["warmup_jit_seconds"] = Fmt.R(warmupJit, 3);
        report.Figures["service_jit_cores"] = new JsonObject
        {
            ["bridge"] = Fmt.R(bridgeUse.ServiceJit, 3), ["direct"] = Fmt.R(directUse.ServiceJit, 3),
            ["paced"] = Fmt.R(pacedUse.ServiceJit, 3), ["backlog"] = Fmt.R(backlogUse.ServiceJit, 3),
        };
        // What Synapse spends on each event whoever sends it; a client that makes it work harder per event shows here
        // whether or not the machine has a core to spare.
        var perEvent = new[] { bridgeUse.SynapseMsPer(bridge.Seen), directUse.SynapseMsPer(direct.Seen), pacedUse.SynapseMsPer(paced.Seen), backlogUse.SynapseMsPer(backlog.Seen) };
        report.Row("Synapse CPU per event, ms (bridge / direct / paced / backlog)", string.Join(" / ", perEvent.Select(ms => Fmt.N(ms, "0.0"))),
            null, Report.Ratio(perEvent[0], perEvent[1]));
        report.Figures["synapse_cpu_ms_per_event"] = new JsonObject
        {
            ["bridge"] = Fmt.R(perEvent[0], 2), ["direct"] = Fmt.R(perEvent[1], 2), ["paced"] = Fmt.R(perEvent[2], 2), ["backlog"] = Fmt.R(perEvent[3], 2),
        };
        report.Row("Synapse ready but waiting for a core, s per s (bridge / direct / paced / backlog)",
            string.Join(" / ", uses.Select(u => Fmt.N(u.SynapseWaiting, "0.00"))));
        // Null where the kernel keeps no scheduler statistics.
        JsonNode? Waiting(PhaseCpu use) => double.IsFinite(use.SynapseWaiting) ? Fmt.R(use.SynapseWaiting, 3) : null;
        report.Figures["synapse_waiting_for_a_core"] = new JsonObject
        {
            ["bridge"] = Waiting(bridgeUse), ["direct"] = Waiting(directUse), ["paced"] = Waiting(pacedUse), ["backlog"] = Waiting(backlogUse),
        };
        // Synapse's log handler writes out every 5 s (or 10 lines), so the last phase's lines can still be in memory.
        var logFile = Path.Combine(synapse.Directory, "homeserver.log");
        var sendLog = SynapseSendLog.Read(logFile);
        for (var waited = Stopwatch.StartNew(); sendLog.Between(backlog.Windows, "@nova_").Sends < backlog.Seen && waited.Elapsed < TimeSpan.FromSeconds(10);)
        {
            await Task.Delay(500);
            sendLog = SynapseSendLog.Read(logFile);
        }
        var (bridgeSends, directSends, pacedSends, backlogSends) = (
            sendLog.Between(bridge.Windows, "@nova_"), sendLog.Between(direct.Windows, "@benchdirect_"),
            sendLog.Between(paced.Windows, "@nova_"), sendLog.Between(backlog.Windows, "@nova_"));
        string Each(Func<SynapseSendLog.Figures, double> figure) =>
            string.Join(" / ", new[] { bridgeSends, directSends, pacedSends, backlogSends }.Select(f => Fmt.N(figure(f), "0.0")));
        report.Row("Synapse's log: sends completed/s (bridge / direct / paced / backlog)", Each(f => f.PerSecond),
            null, Report.Ratio(bridgeSends.PerSecond, directSends.PerSecond));
        report.Row("Synapse's log: ms per send inside Synapse (same)", Each(f => f.RequestMs));
        report.Row("Synapse's log: ms a room waited between sends (same)", Each(f => f.GapMs));
        foreach (var (name, figures) in new[] { ("bridge", bridgeSends), ("direct", directSends), ("paced", pacedSends), ("backlog", backlogSends) })
        {
            report.Figures[$"synapse_log_{name}"] = new JsonObject
            {
                ["sends"] = figures.Sends, ["per_second"] = Fmt.R(figures.PerSecond), ["request_ms"] = Fmt.R(figures.RequestMs), ["gap_ms"] = Fmt.R(figures.GapMs),
            };
        }
        JsonArray Array(IEnumerable<double> values, int digits) => [.. values.Select(v => (JsonNode)Fmt.R(v, digits))];
        report.Figures["per_round"] = new JsonObject
        {
            ["bridge_vs_direct"] = Array(bridge.RatiosTo(direct), 3), ["paced_vs_direct"] = Array(paced.RatiosTo(direct), 3),
            ["backlog_vs_direct"] = Array(backlog.RatiosTo(direct), 3), ["direct_events_per_second"] = Array(direct.Runs.Select(r => r.Timed.PerSecond), 1),
            ["backlog_first_event_seconds"] = Array(backlog.Runs.Select(r => r.Timed.FirstSeconds), 2),
            ["disk_worst_flush_ms"] = new JsonObject
            {
                ["bridge"] = Array(bridge.Runs.Select(r => r.DiskWorstMs), 1), ["direct"] = Array(direct.Runs.Select(r => r.DiskWorstMs), 1),
                ["paced"] = Array(paced.Runs.Select(r => r.DiskWorstMs), 1), ["backlog"] = Array(backlog.Runs.Select(r => r.DiskWorstMs), 1),
            },
            ["disk_stalled_seconds"] = new JsonObject
            {
                ["bridge"] = Array(bridge.Runs.Select(r => r.DiskStalledSeconds), 2), ["direct"] = Array(direct.Runs.Select(r => r.DiskStalledSeconds), 2),
                ["paced"] = Array(paced.Runs.Select(r => r.DiskStalledSeconds), 2), ["backlog"] = Array(backlog.Runs.Select(r => r.DiskStalledSeconds), 2),
            },
        };
        report.Figures["disk_stalled_share"] = new JsonObject
        {
            ["bridge"] = Fmt.R(bridge.DiskStalledShare, 3), ["direct"] = Fmt.R(direct.DiskStalledShare, 3),
            ["paced"] = Fmt.R(paced.DiskStalledShare, 3), ["backlog"] = Fmt.R(backlog.DiskStalledShare, 3),
        };
        report.Figures["bridge_events_per_second"] = Fmt.R(bridge.PerSecond);
        report.Figures["paced_events_per_second"] = Fmt.R(paced.PerSecond);
        report.Figures["cpu_paced"] = pacedUse.ToString();
        report.Figures["backlog_events_per_second"] = Fmt.R(backlog.PerSecond);
        report.Figures["backlog_first_event_seconds"] = Fmt.R(backlog.Runs.Max(r => r.Timed.FirstSeconds), 2);
        report.Figures["duplicates"] = duplicates.Count;
        report.Figures["cpu_bridge"] = bridgeUse.ToString();
        report.Figures["cpu_backlog"] = backlogUse.ToString();
        report.Baseline["direct_events_per_second"] = Fmt.R(direct.PerSecond);
        report.Baseline["cpu_direct"] = directUse.ToString();
        report.Ratios["bridge_vs_direct"] = Fmt.R(Report.Ratio(bridge.PerSecond, direct.PerSecond), 3);
        report.Ratios["paced_vs_direct"] = Fmt.R(Report.Ratio(paced.PerSecond, direct.PerSecond), 3);
        report.Ratios["backlog_vs_direct"] = Fmt.R(Report.Ratio(backlog.PerSecond, direct.PerSecond), 3);
        report.Notes.Add("baseline = a plain appservice client doing PUT /send as ghosts, same rooms x messages, same Synapse, same run");
        report.Notes.Add($"each phase ran once in each of {o.Rounds} rounds, in a rotated order; its rate is all its events over all its time");
        report.Notes.Add("Synapse, the service, its database and this client share the machine: only the ratios mean anything");
        if (duplicates.Count > 0)
        {
            report.Notes.Add("duplicates: " + string.Join(", ", duplicates.Take(10)));
        }
        return report;
    }

    /// <summary>How long the service's JIT has compiled since it started, from its runtime metrics.</summary>
    private static async Task<double> JitSecondsAsync(ChatApi api) =>
        (await api.MetricsAsync()).GetValueOrDefault("system_runtime_dotnet_jit_compilation_time");

    /// <summary>One inbound phase: per message, Synapse's /sync latency, the app's, and the app's beyond the /sync.</summary>
    private sealed record InboundRun(
        Latency Synapse, Latency App, Latency Beyond, PhaseCpu Use, int Sent, int Missing, int TimelineReads, int Pushes, double PushSeconds);

    /// <summary>The appservice pushes the service answered so far and the seconds it spent on them (its HTTP metrics).</summary>
    private static async Task<(double Count, double Seconds)> PushHandlingAsync(ChatApi api)
    {
        var transactions = await api.MetricsAsync(only: "/transactions/{txnId}");
        return (transactions.GetValueOrDefault("http_request_duration_seconds_count"), transactions.GetValueOrDefault("http_request_duration_seconds_sum"));
    }

    private sealed record Timed(int Seen, double Seconds, double FirstSeconds)
    {
        public double PerSecond => Seconds > 0 ? Seen / Seconds : 0;
    }

    /// <summary>One round of a phase: its events, its CPU, the wall-clock window Synapse's log is read for, and the disk
    /// probe's stalled flushes that overlapped it.</summary>
    private sealed record PhaseRun(Timed Timed, PhaseCpu Use, DateTime From, DateTime To, List<TimeSpan> DiskStalls)
    {
        public double DiskWorstMs => DiskStalls.Count > 0 ? DiskStalls.Max().TotalMilliseconds : 0;

        public double DiskStalledSeconds => DiskStalls.Sum(s => s.TotalSeconds);
    }

    /// <summary>A phase's rounds, pooled: all its events over all its time, its CPU weighted by each round's length.</summary>
    private sealed class Phase
    {
        private readonly List<PhaseRun> _runs = [];

        public IReadOnlyList<PhaseRun> Runs => _runs;

        public void Add(PhaseRun run) => _runs.Add(run);

        public int Seen => _runs.Sum(r => r.Timed.Seen);

        public double Seconds => _runs.Sum(r => r.Timed.Seconds);

        public double PerSecond => Seconds > 0 ? Seen / Seconds : 0;

        public PhaseCpu Use => PhaseCpu.Pool(_runs.Select(r => r.Use));

        /// <summary>Seconds the disk probe's flushes were stalled per second of the phase.</summary>
        public double DiskStalledShare => Seconds > 0 ? _runs.Sum(r => r.DiskStalledSeconds) / Seconds : 0;

        public IEnumerable<(DateTime From, DateTime To)> Windows => _runs.Select(r => (r.From, r.To));

        /// <summary>Each round's rate over the same round's rate of <paramref name="baseline"/>.</summary>
        public IEnumerable<double> RatiosTo(Phase baseline) =>
            _runs.Zip(baseline._runs, (run, reference) => Report.Ratio(run.Timed.PerSecond, reference.Timed.PerSecond));
    }

    /// <summary>Runs <paramref name="send"/> and waits until the observer has seen <paramref name="count"/> distinct events
    /// carrying the prefix (or 5 minutes); the time runs from the call to the last one seen.</summary>
    private static async Task<Timed> TimeAsync(SyncWatch watch, string prefix, int count, Func<string, Task> send)
    {
        var start = Stopwatch.GetTimestamp();
        await send(prefix);
        while (watch.Distinct(prefix) < count && Stopwatch.GetElapsedTime(start) < TimeSpan.FromMinutes(5))
        {
            await Task.Delay(20);
        }
        var (first, last) = watch.Span(prefix);
        return new Timed(watch.Distinct(prefix), (last - start) / (double)Stopwatch.Frequency, (first - start) / (double)Stopwatch.Frequency);
    }

    private static async Task<string> RegistrationAsync(string serviceDll, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(serviceDll);
        info.ArgumentList.Add("registration");
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return process.ExitCode == 0 ? await output : throw new InvalidOperationException($"`registration` failed: {await output}{await error}");
    }

    private static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

    private static async Task<T> Until<T>(Func<Task<T?>> probe, string what, TimeSpan timeout) where T : class
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"Timed out waiting for {what}.");
            }
            await Task.Delay(100);
        }
    }

    /// <summary>Synapse 1.67 resolves a new room's alias before its first events are stored: retry for a while.</summary>
    private static async Task Retry(Func<Task> action)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await action();
                return;
            }
            catch (MatrixException) when (clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>
    /// Synapse's and the service's CPU over a phase, in cores; how long Synapse's threads were ready to run but waited
    /// for a core (the scheduler's run-queue time, <c>/proc/PID/task/*/schedstat</c>): what sharing the machine costs it;
    /// and how much of the service's CPU was its JIT.
    /// </summary>
    private sealed class PhaseCpuMeter
    {
        private readonly int _synapsePid, _servicePid;
        private readonly int? _postmasterPid;
        private readonly ChatApi _api;
        private readonly double _synapse, _service, _postgres, _client, _waited, _jit;
        private readonly Stopwatch _clock;

        private PhaseCpuMeter(int synapsePid, int servicePid, int? postmasterPid, ChatApi api, double jit)
        {
            (_synapsePid, _servicePid, _postmasterPid, _api, _jit) = (synapsePid, servicePid, postmasterPid, api, jit);
            (_synapse, _service, _postgres, _client, _waited) = (Seconds(synapsePid), Seconds(servicePid), TreeSeconds(postmasterPid), ClientSeconds(), Waited(synapsePid));
            _clock = Stopwatch.StartNew();
        }

        /// <param name="postmasterPid">The run's PostgreSQL cluster, whose every process is counted; null on SQLite.</param>
        public static async Task<PhaseCpuMeter> StartAsync(int synapsePid, int servicePid, int? postmasterPid, ChatApi api) =>
            new(synapsePid, servicePid, postmasterPid, api, await JitSecondsAsync(api));

        public async Task<PhaseCpu> StopAsync()
        {
            var elapsed = _clock.Elapsed.TotalSeconds;
            var (synapse, service, postgres, client, waited) = (Seconds(_synapsePid), Seconds(_servicePid), TreeSeconds(_postmasterPid), ClientSeconds(), Waited(_synapsePid));
            var jit = await JitSecondsAsync(_api);
            return new PhaseCpu((synapse - _synapse) / elapsed, (service - _service) / elapsed, (postgres - _postgres) / elapsed, (client - _client) / elapsed,
                (waited - _waited) / elapsed, (jit - _jit) / elapsed, elapsed);
        }

        /// <summary>This process: the app users' REST client, the direct client, the observer's /sync and the sink.</summary>
        private static double ClientSeconds()
        {
            using var self = Process.GetCurrentProcess();
            return self.TotalProcessorTime.TotalSeconds;
        }

        private static double Seconds(int pid) => Stat(pid) is { } fields ? Ticks(fields, 11, 12) : 0;

        /// <summary>
        /// A process and its children: its own time, that of the children it has reaped (so a backend that ended during the
        /// phase still counts), and that of those alive.
        /// </summary>
        private static double TreeSeconds(int? pid)
        {
            if (pid is not { } parent || Stat(parent) is not { } fields)
            {
                return 0;
            }
            var children = File.ReadAllText($"/proc/{parent}/task/{parent}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return Ticks(fields, 11, 12, 13, 14) + children.Sum(child => Seconds(int.Parse(child, CultureInfo.InvariantCulture)));
        }

        /// <summary>/proc/PID/stat's fields after the command name (utime is 11, stime 12, cutime 13, cstime 14).</summary>
        private static string[]? Stat(int pid)
        {
            try
            {
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                return stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            }
            catch (IOException)
            {
                return null;
            }
        }

        private static double Ticks(string[] fields, params int[] indexes) =>
            indexes.Sum(i => long.Parse(fields[i], CultureInfo.InvariantCulture)) / 100.0;

        private static double Waited(int pid)
        {
            try
            {
                // Per thread: time on a core, time waiting in the run queue, timeslices (ns, ns, count).
                return Directory.EnumerateDirectories($"/proc/{pid}/task")
                    .Sum(task => long.Parse(File.ReadAllText(Path.Combine(task, "schedstat")).Split(' ')[1], CultureInfo.InvariantCulture)) / 1e9;
            }
            catch (IOException)
            {
                return double.NaN;
            }
        }
    }

    /// <summary>Cores used over a phase, Synapse's seconds of waiting for a core per second, and the service's JIT in cores.</summary>
    private sealed record PhaseCpu(double Synapse, double Service, double Postgres, double Client, double SynapseWaiting, double ServiceJit, double Seconds)
    {
        /// <summary>Synapse's CPU time over the phase per event of it, in ms.</summary>
        public double SynapseMsPer(int events) => MsPer(Synapse, events);

        /// <summary>The service's, PostgreSQL's and the bench process's CPU over the phase per event of it, in ms.</summary>
        public double OthersMsPer(int events) => MsPer(Service + Postgres + Client, events);

        private double MsPer(double cores, int events) => events > 0 ? cores * Seconds * 1000 / events : double.NaN;

        /// <summary>Several phases as one: each figure weighted by the phase's length.</summary>
        public static PhaseCpu Pool(IEnumerable<PhaseCpu> phases)
        {
            var all = phases.ToList();
            var seconds = all.Sum(p => p.Seconds);
            double Mean(Func<PhaseCpu, double> figure) => seconds > 0 ? all.Sum(p => figure(p) * p.Seconds) / seconds : double.NaN;
            return new PhaseCpu(Mean(p => p.Synapse), Mean(p => p.Service), Mean(p => p.Postgres), Mean(p => p.Client), Mean(p => p.SynapseWaiting), Mean(p => p.ServiceJit), seconds);
        }

        public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"synapse {Synapse:0.00} + svc {Service:0.00} + pg {Postgres:0.00} + client {Client:0.00}");
    }
}

/// <summary>
/// Synapse alone on the machine's last core, everything else of the run (the service, the run's PostgreSQL cluster, this
/// client) on the others, with <c>taskset</c> on every thread. Threads and PostgreSQL backends started later inherit it.
/// </summary>
internal sealed class CoreSplit(long synapse, long others)
{
    public long Synapse => synapse;

    public long Others => others;

    public static CoreSplit Create()
    {
        var count = Environment.ProcessorCount;
        if (count < 2)
        {
            throw new InvalidOperationException("--isolate-synapse needs at least 2 cores.");
        }
        return new CoreSplit(1L << (count - 1), (1L << (count - 1)) - 1);
    }

    public async Task ApplyAsync(int synapsePid, int servicePid, string? postgres)
    {
        await PinAsync(synapsePid, synapse);
        await PinAsync(servicePid, others);
        await PinAsync(Environment.ProcessId, others);
        if (postgres is not null)
        {
            // The run's own cluster only: its postmaster and the processes it has forked so far.
            var postmaster = await PostmasterAsync(postgres);
            await PinAsync(postmaster, others);
            foreach (var child in File.ReadAllText($"/proc/{postmaster}/task/{postmaster}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                await PinAsync(int.Parse(child, CultureInfo.InvariantCulture), others);
            }
        }
    }

    /// <summary>The process id of the PostgreSQL cluster behind a connection string (its data directory's postmaster.pid).</summary>
    public static async Task<int> PostmasterAsync(string connectionString)
    {
        await using var connection = new Npgsql.NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SHOW data_directory", connection);
        var directory = (string)(await command.ExecuteScalarAsync())!;
        return int.Parse(File.ReadLines(Path.Combine(directory, "postmaster.pid")).First(), CultureInfo.InvariantCulture);
    }

    private static async Task PinAsync(int pid, long mask)
    {
        var info = new ProcessStartInfo("taskset") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { "-a", "-p", mask.ToString("x", CultureInfo.InvariantCulture), pid.ToString(CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(argument);
        }
        using var process = Process.Start(info) ?? throw new InvalidOperationException("Could not start taskset.");
        var error = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        // A PostgreSQL backend may have ended since it was listed.
        if (process.ExitCode != 0 && Directory.Exists($"/proc/{pid}"))
        {
            throw new InvalidOperationException($"taskset -a -p {mask:x} {pid} failed: {await error}");
        }
    }
}

/// <summary>A Matrix user's /sync loop: when each event body was first seen, riding out a stopped homeserver.</summary>
internal sealed class SyncWatch : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, long> _firstSeen = new();
    private readonly ConcurrentDictionary<string, int> _seenCount = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    private SyncWatch(Matrix user, string since) => _loop = LoopAsync(user, since);

    public static async Task<SyncWatch> StartAsync(Matrix user)
    {
        var first = await user.GetAsync("/_matrix/client/v3/sync?timeout=0&filter=" + Uri.EscapeDataString("""{"room":{"timeline":{"limit":1}}}"""));
        return new SyncWatch(user, (string)first["next_batch"]!);
    }

    private async Task LoopAsync(Matrix user, string since)
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var body = await user.GetAsync($"/_matrix/client/v3/sync?timeout=10000&since={Uri.EscapeDataString(since)}", _stop.Token);
                var now = Stopwatch.GetTimestamp();
                foreach (var room in body["rooms"]?["join"]?.AsObject() ?? [])
                {
                    foreach (var evt in room.Value?["timeline"]?["events"]?.AsArray() ?? [])
                    {
                        if ((string?)evt?["type"] == "m.room.message" && evt["content"]?["body"] is JsonValue value && value.TryGetValue<string>(out var text))
                        {
                            _firstSeen.TryAdd(text, now);
                            _seenCount.AddOrUpdate(text, 1, (_, c) => c + 1);
                        }
                    }
                }
                since = (string)body["next_batch"]!;
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or MatrixException or TaskCanceledException)
            {
                await Task.Delay(100);
            }
        }
    }

    public int Distinct(string prefix) => _firstSeen.Keys.Count(k => k.StartsWith(prefix + ":", StringComparison.Ordinal));

    public bool TryFirstSeen(string body, out long at) => _firstSeen.TryGetValue(body, out at);

    /// <summary>Stopwatch timestamps of the first and the last event with the prefix.</summary>
    public (long First, long Last) Span(string prefix)
    {
        var times = _firstSeen.Where(p => p.Key.StartsWith(prefix + ":", StringComparison.Ordinal)).Select(p => p.Value).ToList();
        return times.Count == 0 ? (0, 0) : (times.Min(), times.Max());
    }

    public List<string> Duplicates() => [.. _seenCount.Where(p => p.Value > 1).Select(p => $"{p.Key} x{p.Value}")];

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }
        _stop.Dispose();
    }
}

/// <summary>Client-Server API calls with one access token (an appservice's as_token or a user's).</summary>
internal sealed class Matrix : IDisposable
{
    private readonly HttpClient _http;

    public Matrix(Uri homeserver, string token)
    {
        _http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { BaseAddress = homeserver, Timeout = TimeSpan.FromSeconds(60) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    public static async Task<Matrix> LoginAsync(Uri homeserver, string user, string password)
    {
        using var anonymous = new Matrix(homeserver, "none");
        anonymous._http.DefaultRequestHeaders.Authorization = null;
        var login = await anonymous.PostAsync("/_matrix/client/v3/login", new JsonObject
        {
            ["type"] = "m.login.password", ["identifier"] = new JsonObject { ["type"] = "m.id.user", ["user"] = user }, ["password"] = password,
        });
        return new Matrix(homeserver, (string)login["access_token"]!);
    }

    public Task<JsonObject> PostAsync(string path, JsonNode body) => SendAsync(HttpMethod.Post, path, body, CancellationToken.None);

    public Task<JsonObject> PutAsync(string path, JsonNode body) => SendAsync(HttpMethod.Put, path, body, CancellationToken.None);

    public Task<JsonObject> GetAsync(string path, CancellationToken cancellationToken = default) => SendAsync(HttpMethod.Get, path, null, cancellationToken);

    public async Task<string?> ResolveAliasAsync(string alias)
    {
        try
        {
            return (string?)(await GetAsync($"/_matrix/client/v3/directory/room/{Uri.EscapeDataString(alias)}"))["room_id"];
        }
        catch (MatrixException ex) when (ex.Status == 404)
        {
            return null;
        }
    }

    private async Task<JsonObject> SendAsync(HttpMethod method, string path, JsonNode? body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        }
        using var response = await _http.SendAsync(request, cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw new MatrixException((int)response.StatusCode, $"{method} {path}: {(int)response.StatusCode} {text}");
        }
        return JsonNode.Parse(text.Length == 0 ? "{}" : text)!.AsObject();
    }

    public void Dispose() => _http.Dispose();
}

internal sealed class MatrixException(int status, string message) : Exception(message)
{
    public int Status { get; } = status;
}

/// <summary>A private Synapse run by synapse.sh in a temporary directory.</summary>
internal sealed class Synapse : IAsyncDisposable
{
    private readonly string _script;

    private Synapse(string script, string directory, Uri url)
    {
        _script = script;
        Directory = directory;
        Url = url;
    }

    public string Directory { get; }

    public Uri Url { get; }

    public int Pid => int.Parse(File.ReadAllText(Path.Combine(Directory, "synapse.pid")).Trim(), CultureInfo.InvariantCulture);

    public static string? Locate()
    {
        if (Environment.GetEnvironmentVariable("CHAT_BENCH_SYNAPSE_SH") is { Length: > 0 } configured)
        {
            return File.Exists(configured) ? Path.GetFullPath(configured) : null;
        }
        var beside = Path.GetFullPath(Path.Combine(HarnessSettings.RepositoryRoot(), "..", "shared", "synapse", "synapse.sh"));
        return File.Exists(beside) ? beside : File.Exists("/work/shared/synapse/synapse.sh") ? "/work/shared/synapse/synapse.sh" : null;
    }

    public static async Task<Synapse> StartAsync(string script, TextWriter log, params string[] registrations)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("chat-bench-synapse-").FullName;
        var files = registrations.Select((yaml, i) =>
        {
            var path = Path.Combine(directory, $"registration-{i}.yaml");
            File.WriteAllText(path, yaml);
            return path;
        }).ToList();
        var synapse = new Synapse(script, directory, new Uri("http://127.0.0.1"));
        // synapse.sh would pick a free port itself and release it for Synapse's few seconds of start-up.
        var output = await synapse.RunAsync(["start", directory, .. files], port: LoopbackPorts.Free());
        var url = output.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith("HS_URL=", StringComparison.Ordinal))["HS_URL=".Length..];
        log.WriteLine($"   synapse ready on {url} ({directory})");
        return new Synapse(script, directory, new Uri(url));
    }

    public Task<string> RunAsync(params string[] args) => RunAsync(args, port: null);

    /// <param name="port">Synapse's port, when <c>start</c> configures a new instance (<c>SYNAPSE_PORT</c>).</param>
    public async Task<string> RunAsync(string[] args, int? port)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (port is { } chosen)
        {
            info.Environment["SYNAPSE_PORT"] = chosen.ToString(CultureInfo.InvariantCulture);
        }
        info.ArgumentList.Add(_script);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return process.ExitCode == 0
            ? await output
            : throw new InvalidOperationException($"synapse.sh {string.Join(' ', args)} failed: {await output}{await error}");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await RunAsync("kill", Directory);
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException)
        {
            // best effort
        }
    }
}

/// <summary>Answers the direct client's appservice pushes at once, as a bridge that does nothing would.</summary>
internal sealed class TransactionSink : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TransactionSink(WebApplication app, Uri url)
    {
        _app = app;
        Url = url;
    }

    public Uri Url { get; }

    public static async Task<TransactionSink> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        app.MapPut("/transactions/{id}", () => Results.Text("{}", "application/json"));
        app.MapPut("/_matrix/app/v1/transactions/{id}", () => Results.Text("{}", "application/json"));
        app.MapGet("/users/{id}", () => Results.NotFound());
        app.MapGet("/_matrix/app/v1/users/{id}", () => Results.NotFound());
        await app.StartAsync();
        return new TransactionSink(app, new Uri(app.Urls.First()));
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
