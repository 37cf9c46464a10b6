using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RealtimeChat.Bench;

public sealed record NoisyNeighbourOptions
{
    /// <summary>The victim's steady send rate (under its own 20/s limit).</summary>
    public double VictimRate { get; init; } = 10;

    /// <summary>Length of the quiet phase and of each flood, in each round.</summary>
    public double Seconds { get; init; } = 15;

    /// <summary>How many times every phase runs, each round in a rotated order; a phase's figures pool its rounds.</summary>
    public int Rounds { get; init; } = 4;

    /// <summary>Requests the attacker keeps in flight during an HTTP flood.</summary>
    public int FloodWorkers { get; init; } = 32;

    /// <summary>Members of each group the attacker creates (the victim and its watcher among them).</summary>
    public int GroupMembers { get; init; } = 1000;

    public int UploadBytes { get; init; } = 256 * 1024;

    /// <summary>WebSockets the attacker tries to open in the socket flood.</summary>
    public int Sockets { get; init; } = 2000;

    public int ConnectParallel { get; init; } = 64;
}

/// <summary>
/// A victim sends at a steady rate, watched by another member's WebSocket, first alone and then while one attacker
/// floods each write class in turn (edits, reactions, group creation with many members, uploads, thousands of
/// sockets plus sends to them). The service runs with its default limits; the figure is the victim's latency under
/// each flood against the quiet one, every phase run once per round and pooled. Beside it, the same over the sends
/// during which the disk flush probe did not stall: what the service adds when the storage does not.
/// </summary>
public static class NoisyNeighbourScenario
{
    // The README's defaults, restored over the harness's capacity settings.
    private static readonly string[] DefaultLimits =
    [
        "--Messages:SendsPerSecond=20", "--Messages:SendBurst=40",
        "--RateLimits:Edits:PerSecond=10", "--RateLimits:Edits:Burst=30",
        "--RateLimits:Conversations:PerSecond=1", "--RateLimits:Conversations:Burst=20",
        "--RateLimits:Uploads:PerSecond=2", "--RateLimits:Uploads:Burst=10",
        "--RateLimits:ReadMarkers:PerSecond=10", "--RateLimits:ReadMarkers:Burst=30",
        "--RateLimits:Reads:PerSecond=50", "--RateLimits:Reads:Burst=200",
    ];

    private const double TargetRatio = 2;

    public static async Task<Report> RunAsync(HarnessSettings settings, NoisyNeighbourOptions o)
    {
        var log = settings.Log;
        var report = new Report("noisy-neighbour");
        report.Parameters["db"] = settings.Postgres is null ? "sqlite" : "postgres";
        report.Parameters["victim_rate"] = o.VictimRate;
        report.Parameters["seconds"] = o.Seconds;
        report.Parameters["rounds"] = o.Rounds;
        report.Parameters["flood_workers"] = o.FloodWorkers;
        report.Parameters["group_members"] = o.GroupMembers;
        report.Parameters["upload_bytes"] = o.UploadBytes;
        report.Parameters["sockets"] = o.Sockets;

        await using var service = await ChatService.StartAsync(settings, DefaultLimits);
        using var victimApi = new ChatApi(service.BaseUrl, 8);
        using var floodApi = new ChatApi(service.BaseUrl, o.FloodWorkers + 8);
        var (victim, watcher, attacker) = (User.New(), User.New(), User.New());
        var victimConversation = await victimApi.CreateGroupAsync(victim, "victim", [watcher.Id]);
        var shared = await floodApi.CreateGroupAsync(attacker, "shared", [victim.Id, watcher.Id]);
        var target = await PostJsonAsync(floodApi, attacker, $"/api/v1/conversations/{shared}/messages", new { content = "edit me" });
        var targetMessage = JsonDocument.Parse(target).RootElement.GetProperty("id").GetGuid();
        var sink = new FrameSink();
        await using var watching = await Watcher.ConnectAsync(service.BaseUrl, "/ws", watcher.Token, sink.OnFrame, CancellationToken.None);
        Common.Say(log, "victim, watcher and attacker ready");

        // Each victim send's scheduled time and answer, to tell the sends that overlapped a stall of the storage.
        var timings = new System.Collections.Concurrent.ConcurrentQueue<(long Start, long End)>();
        async Task VictimSend(int worker, long number, long timestamp, CancellationToken ct)
        {
            await victimApi.SendAsync(victim, victimConversation, Marker.Make(timestamp, number), ct);
            timings.Enqueue((timestamp, Stopwatch.GetTimestamp()));
        }

        using var flushProbe = new DiskFlushProbe(o.VictimRate);

        async Task MeasureAsync(PhaseTotals totals, Func<CancellationToken, Task>? flood)
        {
            var deliveries = sink.Begin();
            using var stop = new CancellationTokenSource();
            var commitsBefore = await Commits.ReadAsync(victimApi);
            timings.Clear();
            flushProbe.Restart();
            var cpu = new CpuMeter(service.Process.Pid);
            var flooding = flood is null ? Task.CompletedTask : Task.Run(() => flood(stop.Token));
            var sends = await Load.RunAsync(2, o.VictimRate, Common.Seconds(o.Seconds), VictimSend);
            var used = cpu.Stop();
            var flushes = flushProbe.Restart();
            await stop.CancelAsync();
            await flooding;
            await deliveries.SettleAsync(sends.Completed, TimeSpan.FromSeconds(3));
            var calm = new Latency();
            foreach (var (start, end) in timings.Where(t => !flushProbe.StalledDuring(t.Start, t.End)))
            {
                calm.RecordTicks(end - start);
            }
            totals.Add(sends, deliveries, used, flushes, calm, (await Commits.ReadAsync(victimApi)) - commitsBefore);
        }

        var members = new[] { victim.Id, watcher.Id }.Concat(Enumerable.Range(0, Math.Max(0, o.GroupMembers - 3)).Select(_ => Guid.NewGuid())).ToArray();
        var upload = RandomNumberGenerator.GetBytes(o.UploadBytes);
        var emoji = new[] { "👍", "🎉", "❤️", "😂" };
        var phases = new (string Name, Func<Outcomes, CancellationToken, Task>? Flood)[]
        {
            ("quiet", null),
            ("edits", (outcomes, ct) => HttpFloodAsync(o.FloodWorkers, outcomes, ct, n =>
                SendJsonAsync(floodApi, attacker, HttpMethod.Patch, $"/api/v1/conversations/{shared}/messages/{targetMessage}", new { content = $"edit {n}" }, CancellationToken.None))),
            ("reactions", (outcomes, ct) => HttpFloodAsync(o.FloodWorkers, outcomes, ct, n =>
                SendAsync(floodApi, attacker, n % 2 == 0 ? HttpMethod.Put : HttpMethod.Delete,
                    $"/api/v1/conversations/{shared}/messages/{targetMessage}/reactions/{Uri.EscapeDataString(emoji[n / 2 % emoji.Length])}", null, CancellationToken.None))),
            ("groups", (outcomes, ct) => HttpFloodAsync(o.FloodWorkers, outcomes, ct, n =>
                SendJsonAsync(floodApi, attacker, HttpMethod.Post, "/api/v1/conversations", new { kind = "group", name = $"spam {n}", member_ids = members }, CancellationToken.None))),
            ("uploads", (outcomes, ct) => HttpFloodAsync(o.FloodWorkers, outcomes, ct, _ =>
            {
                var file = new ByteArrayContent(upload);
                file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                return SendAsync(floodApi, attacker, HttpMethod.Post, $"/api/v1/conversations/{shared}/media",
                    new MultipartFormDataContent { { file, "file", "flood.bin" } }, CancellationToken.None);
            })),
            ("sockets", (outcomes, ct) => SocketFloodAsync(service.BaseUrl, floodApi, attacker, shared, o, outcomes, ct)),
        };
        var totals = phases.ToDictionary(p => p.Name, p => new PhaseTotals());

        // The storage's flush stalls come and go on their own (docs/performance.md, noisy-neighbour), and one stall
        // sets the p99 of the phase it falls in. So every phase, the quiet reference included, runs once per round,
        // each round in a rotated order, and each phase's figures pool its rounds: a stall is as likely to fall in
        // the quiet phase as in any flood, and no phase always follows the same one.
        await Load.RunAsync(2, o.VictimRate, Common.Seconds(Math.Min(2, o.Seconds)), VictimSend);
        for (var round = 0; round < o.Rounds; round++)
        {
            for (var i = 0; i < phases.Length; i++)
            {
                var (name, flood) = phases[(i + round) % phases.Length];
                Common.Say(log, $"round {round + 1} of {o.Rounds}: {name}, {o.Seconds} s");
                var phase = totals[name];
                await MeasureAsync(phase, flood is null ? null : ct => flood(phase.Outcomes, ct));
            }
        }

        var quiet = totals["quiet"];
        var quietSend = quiet.Send.Summary();
        var quietDelivery = quiet.Delivery.Summary();
        report.Row("victim send, quiet", quietSend.ToString());
        report.Row("victim delivery, quiet", quietDelivery.ToString());
        var quietCalm = quiet.Calm.Summary();
        report.Row($"  victim send, calm disk ({quietCalm.Count} of {quiet.Sent})", quietCalm.ToString());
        RoundRows(report, quiet, null);
        report.Row("CPU cores, quiet", quiet.Cpu.ToString());
        StorageRows(report, quiet);
        report.Figures["quiet"] = quiet.ToJson();

        var floods = new JsonObject();
        var errors = quiet.Errors;
        foreach (var (name, _) in phases.Skip(1))
        {
            var phase = totals[name];
            var outcomes = phase.Outcomes;
            errors += phase.Errors;
            var send = phase.Send.Summary();
            var delivery = phase.Delivery.Summary();
            var sendRatio = Report.Ratio(send.P99, quietSend.P99);
            var deliveryRatio = Report.Ratio(delivery.P99, quietDelivery.P99);
            var goal = settings.Postgres is null ? null : $"p99 ratio <= {TargetRatio}";
            report.Row($"victim send, {name} flood", send.ToString(), quietSend.ToString(), sendRatio, goal, goal is null ? null : sendRatio <= TargetRatio);
            report.Row($"victim delivery, {name} flood", delivery.ToString(), quietDelivery.ToString(), deliveryRatio, goal, goal is null ? null : deliveryRatio <= TargetRatio);
            var calm = phase.Calm.Summary();
            var calmRatio = Report.Ratio(calm.P99, quietCalm.P99);
            report.Row($"  victim send, calm disk ({calm.Count} of {phase.Sent})", calm.ToString(), quietCalm.ToString(), calmRatio);
            RoundRows(report, phase, quiet);
            report.Row($"  attacker: accepted / 429 / other", $"{outcomes.Accepted} / {outcomes.Limited} / {outcomes.Other}");
            report.Row($"  CPU cores", phase.Cpu.ToString());
            StorageRows(report, phase);
            if (outcomes.SocketsOpened + outcomes.SocketsRefused + outcomes.SocketsRateLimited > 0)
            {
                report.Row($"  attacker sockets: open / closed 4029 / handshake 429", $"{outcomes.SocketsOpened} / {outcomes.SocketsRefused} / {outcomes.SocketsRateLimited}");
            }
            var figure = phase.ToJson();
            figure["attacker_accepted"] = outcomes.Accepted;
            figure["attacker_limited"] = outcomes.Limited;
            figure["attacker_other"] = outcomes.Other;
            figure["attacker_sockets_open"] = outcomes.SocketsOpened;
            figure["attacker_sockets_refused"] = outcomes.SocketsRefused;
            figure["attacker_sockets_rate_limited"] = outcomes.SocketsRateLimited;
            floods[name] = figure;
            report.Ratios[$"{name}_send_p50"] = Fmt.R(Report.Ratio(send.P50, quietSend.P50), 2);
            report.Ratios[$"{name}_send_p99"] = Fmt.R(sendRatio, 2);
            report.Ratios[$"{name}_delivery_p99"] = Fmt.R(deliveryRatio, 2);
            report.Ratios[$"{name}_send_p99_calm_disk"] = Fmt.R(calmRatio, 2);
            if (outcomes.FirstOther is { } other)
            {
                report.Notes.Add($"{name}: first unexpected attacker outcome: {other}");
            }
            if (phase.FirstError is { } error)
            {
                report.Notes.Add($"{name}: first victim error: {error}");
            }
        }
        if (quiet.FirstError is { } quietError)
        {
            report.Notes.Add($"quiet: first victim error: {quietError}");
        }
        report.Figures["phases"] = floods;
        report.Figures["victim_errors"] = errors;
        report.Row("victim errors / watcher dropped", $"{errors} / {(watching.Failure is null ? 0 : 1)}");
        if (settings.Postgres is null)
        {
            report.Notes.Add("SQLite has one writer: every accepted write of the attacker queues with the victim's sends.");
        }
        return report;
    }

    /// <summary>One phase over all rounds: its latencies pooled, and what each round alone saw.</summary>
    private sealed class PhaseTotals
    {
        private readonly List<CpuUse> _cpu = [];

        public Latency Send { get; } = new();
        public Latency Delivery { get; } = new();
        public Latency Flushes { get; } = new();

        /// <summary>The victim's sends during which no flush of the probe stalled: what the service itself adds.</summary>
        public Latency Calm { get; } = new();

        public List<double> SendP99PerRound { get; } = [];
        public List<double> FlushMaxPerRound { get; } = [];
        public Outcomes Outcomes { get; } = new();
        public long Sent { get; private set; }
        public long Delivered { get; private set; }
        public long Errors { get; private set; }
        public string? FirstError { get; private set; }
        public Commits Commits { get; private set; }

        public CpuUse Cpu => new(Mean(c => c.Machine), Mean(c => c.Service), Mean(c => c.Postgres), Mean(c => c.Client), Mean(c => c.Other));

        public void Add(LoadResult sends, Deliveries deliveries, CpuUse cpu, Latency flushes, Latency calm, Commits commits)
        {
            Calm.Add(calm);
            Send.Add(sends.Latency);
            Delivery.Add(deliveries.Latency);
            Flushes.Add(flushes);
            SendP99PerRound.Add(sends.Latency.PercentileMs(99));
            FlushMaxPerRound.Add(flushes.MaxMs);
            _cpu.Add(cpu);
            Sent += sends.Completed;
            Delivered += deliveries.Count;
            Errors += sends.Errors;
            FirstError ??= sends.FirstError;
            Commits += commits;
        }

        public JsonObject ToJson() => new()
        {
            ["send"] = Send.Summary().ToJson(),
            ["delivery"] = Delivery.Summary().ToJson(),
            ["send_calm_disk"] = Calm.Summary().ToJson(),
            ["send_p99_per_round_ms"] = new JsonArray([.. SendP99PerRound.Select(p => (JsonNode)Fmt.R(p, 3))]),
            ["victim_sent"] = Sent,
            ["victim_delivered"] = Delivered,
            ["cpu_cores"] = Cpu.ToJson(),
            ["disk_flush"] = Flushes.Summary().ToJson(),
            ["disk_flush_max_per_round_ms"] = new JsonArray([.. FlushMaxPerRound.Select(p => (JsonNode)Fmt.R(p, 3))]),
            ["commits"] = Commits.Total,
            ["commits_over_100ms"] = Commits.Slow,
        };

        private double Mean(Func<CpuUse, double> part) => _cpu.Count == 0 ? 0 : _cpu.Average(part);
    }

    /// <summary>Each round on its own: the victim's p99, its ratio to the same round's quiet p99, and the flush probe's worst.</summary>
    private static void RoundRows(Report report, PhaseTotals phase, PhaseTotals? quiet)
    {
        static string Join(IEnumerable<double> values) => string.Join(" / ", values.Select(v => v.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)));
        report.Row("  victim send p99 per round", Join(phase.SendP99PerRound));
        if (quiet is not null)
        {
            report.Row("  p99 ratio to the same round's quiet", string.Join(" / ", phase.SendP99PerRound.Zip(quiet.SendP99PerRound,
                (p, q) => Report.Ratio(p, q).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture))));
        }
        report.Row("  disk flush probe max per round", Join(phase.FlushMaxPerRound));
    }

    /// <summary>What the storage did in a phase: the flush probe beside the service, and the service's own commits.</summary>
    private static void StorageRows(Report report, PhaseTotals phase)
    {
        report.Row("  disk flush probe (8 KiB + fsync)", phase.Flushes.Summary().ToString());
        report.Row("  service commits: all / over 100 ms", $"{phase.Commits.Total} / {phase.Commits.Slow}");
    }

    /// <summary>The service's <c>chat_db_commit_seconds</c> histogram: commits, and those that took over 100 ms.</summary>
    private readonly record struct Commits(long Total, long Slow)
    {
        public static async Task<Commits> ReadAsync(ChatApi api)
        {
            var text = await api.Http.GetStringAsync("/metrics");
            var total = Value(text, "chat_db_commit_seconds_count ");
            return new Commits(total, total - Value(text, "chat_db_commit_seconds_bucket{le=\"0.1\"} "));
        }

        public static Commits operator -(Commits after, Commits before) => new(after.Total - before.Total, after.Slow - before.Slow);

        public static Commits operator +(Commits a, Commits b) => new(a.Total + b.Total, a.Slow + b.Slow);

        // A service without the histogram (an older commit) reads as zero.
        private static long Value(string metrics, string prefix) =>
            metrics.Split('\n').FirstOrDefault(line => line.StartsWith(prefix, StringComparison.Ordinal)) is { } line
                ? (long)double.Parse(line[prefix.Length..], System.Globalization.CultureInfo.InvariantCulture)
                : 0;
    }

    /// <summary>What the attacker's requests got back.</summary>
    public sealed class Outcomes
    {
        public long Accepted;
        public long Limited;
        public long SocketsOpened;
        public long SocketsRefused;
        public long SocketsRateLimited;
        public long Other;
        public string? FirstOther;

        public void Count(HttpStatusCode status, string? detail = null)
        {
            if ((int)status is >= 200 and < 300)
            {
                Interlocked.Increment(ref Accepted);
            }
            else if (status == HttpStatusCode.TooManyRequests)
            {
                Interlocked.Increment(ref Limited);
            }
            else
            {
                Unexpected($"{(int)status} {detail}");
            }
        }

        public void Unexpected(string what)
        {
            if (Interlocked.Increment(ref Other) == 1)
            {
                FirstOther = what;
            }
        }
    }

    /// <summary>
    /// Workers each keep one request in flight until <paramref name="stop"/>. Requests that <paramref name="request"/>
    /// does not tie to it finish after the phase and count for it: a write held up (a disk's flush stalling for 2 s)
    /// is still the attacker's.
    /// </summary>
    private static async Task HttpFloodAsync(int workers, Outcomes outcomes, CancellationToken stop, Func<int, Task<(HttpStatusCode, string?)>> request)
    {
        var next = 0;
        await Task.WhenAll(Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var (status, detail) = await request(Interlocked.Increment(ref next));
                    outcomes.Count(status, detail);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    outcomes.Unexpected(ex.Message);
                }
            }
        })));
    }

    /// <summary>Opens as many sockets as the service lets the attacker have, then sends into a conversation they all watch.</summary>
    private static async Task SocketFloodAsync(Uri baseUrl, ChatApi api, User attacker, Guid conversation, NoisyNeighbourOptions o, Outcomes outcomes, CancellationToken stop)
    {
        var sockets = new System.Collections.Concurrent.ConcurrentBag<Watcher>();
        try
        {
            await Common.ParallelAsync(o.Sockets, o.ConnectParallel, async _ =>
            {
                if (stop.IsCancellationRequested)
                {
                    return 0;
                }
                try
                {
                    sockets.Add(await Watcher.ConnectAsync(baseUrl, "/ws", attacker.Token, (_, _) => { }, stop));
                    Interlocked.Increment(ref outcomes.SocketsOpened);
                }
                catch (Exception ex) when (ex.Message.Contains("4029", StringComparison.Ordinal) || ex.Message.Contains("too_many_connections", StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref outcomes.SocketsRefused);
                }
                catch (Exception ex) when (ex.Message.Contains("'429'", StringComparison.Ordinal))
                {
                    // The handshake itself was over the attacker's read budget.
                    Interlocked.Increment(ref outcomes.SocketsRateLimited);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // The phase ended during the handshake, as it does for the HTTP floods' requests.
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    outcomes.Unexpected(ex.Message);
                }
                return 0;
            });
            await HttpFloodAsync(4, outcomes, stop, n => SendJsonAsync(api, attacker, HttpMethod.Post, $"/api/v1/conversations/{conversation}/messages", new { content = $"to my sockets {n}" }, stop));
        }
        finally
        {
            await Task.WhenAll(sockets.Select(s => s.DisposeAsync().AsTask()));
        }
    }

    private static Task<(HttpStatusCode, string?)> SendJsonAsync(ChatApi api, User user, HttpMethod method, string path, object body, CancellationToken ct) =>
        SendAsync(api, user, method, path, new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } }, ct);

    private static async Task<(HttpStatusCode, string?)> SendAsync(ChatApi api, User user, HttpMethod method, string path, HttpContent? content, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", user.Token);
        using var response = await api.Http.SendAsync(request, ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        return (response.StatusCode, response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.TooManyRequests ? null : text);
    }

    private static async Task<string> PostJsonAsync(ChatApi api, User user, string path, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path)
        {
            Content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body)) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } },
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", user.Token);
        using var response = await api.Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return response.IsSuccessStatusCode ? text : throw new InvalidOperationException($"{path} answered {(int)response.StatusCode}: {text}");
    }
}
