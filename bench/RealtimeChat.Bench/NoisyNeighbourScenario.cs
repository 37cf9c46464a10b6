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

    /// <summary>Length of the quiet phase and of each flood.</summary>
    public double Seconds { get; init; } = 15;

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
/// each flood against the quiet one.
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

        Task VictimSend(int worker, long number, long timestamp, CancellationToken ct) =>
            victimApi.SendAsync(victim, victimConversation, Marker.Make(timestamp, number), ct);

        using var flushProbe = new DiskFlushProbe(o.VictimRate);

        async Task<Phase> MeasureAsync(Func<CancellationToken, Task>? flood)
        {
            var deliveries = sink.Begin();
            using var stop = new CancellationTokenSource();
            var commitsBefore = await Commits.ReadAsync(victimApi);
            flushProbe.Restart();
            var cpu = new CpuMeter(service.Process.Pid);
            var flooding = flood is null ? Task.CompletedTask : Task.Run(() => flood(stop.Token));
            var sends = await Load.RunAsync(2, o.VictimRate, Common.Seconds(o.Seconds), VictimSend);
            var used = cpu.Stop();
            var flushes = flushProbe.Restart().Summary();
            await stop.CancelAsync();
            await flooding;
            await deliveries.SettleAsync(sends.Completed, TimeSpan.FromSeconds(3));
            var commits = (await Commits.ReadAsync(victimApi)) - commitsBefore;
            return new Phase(sends, deliveries, used, flushes, commits);
        }

        // Warm-up, then the quiet reference.
        await Load.RunAsync(2, o.VictimRate, Common.Seconds(Math.Min(2, o.Seconds)), VictimSend);
        Common.Say(log, $"quiet, {o.Seconds} s");
        var quiet = await MeasureAsync(null);
        var (quietSends, quietDeliveries, quietCpu) = (quiet.Sends, quiet.Deliveries, quiet.Cpu);
        var quietSend = quietSends.Latency.Summary();
        var quietDelivery = quietDeliveries.Latency.Summary();
        report.Row("victim send, quiet", quietSend.ToString());
        report.Row("victim delivery, quiet", quietDelivery.ToString());
        report.Row("CPU cores, quiet", quietCpu.ToString());
        StorageRows(report, quiet);
        report.Figures["quiet"] = new JsonObject
        {
            ["send"] = quietSend.ToJson(), ["delivery"] = quietDelivery.ToJson(), ["cpu_cores"] = quietCpu.ToJson(),
            ["disk_flush"] = quiet.Flushes.ToJson(), ["commits"] = quiet.Commits.Total, ["commits_over_100ms"] = quiet.Commits.Slow,
        };

        var members = new[] { victim.Id, watcher.Id }.Concat(Enumerable.Range(0, Math.Max(0, o.GroupMembers - 3)).Select(_ => Guid.NewGuid())).ToArray();
        var upload = RandomNumberGenerator.GetBytes(o.UploadBytes);
        var emoji = new[] { "👍", "🎉", "❤️", "😂" };
        var floods = new (string Name, Func<Outcomes, CancellationToken, Task> Run)[]
        {
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

        var phases = new JsonObject();
        var errors = quietSends.Errors;
        foreach (var (name, run) in floods)
        {
            Common.Say(log, $"flood: {name}, {o.Seconds} s");
            var outcomes = new Outcomes();
            var phase = await MeasureAsync(ct => run(outcomes, ct));
            var (sends, deliveries, cpu) = (phase.Sends, phase.Deliveries, phase.Cpu);
            errors += sends.Errors;
            var send = sends.Latency.Summary();
            var delivery = deliveries.Latency.Summary();
            var sendRatio = Report.Ratio(send.P99, quietSend.P99);
            var deliveryRatio = Report.Ratio(delivery.P99, quietDelivery.P99);
            var goal = settings.Postgres is null ? null : $"p99 ratio <= {TargetRatio}";
            report.Row($"victim send, {name} flood", send.ToString(), quietSend.ToString(), sendRatio, goal, goal is null ? null : sendRatio <= TargetRatio);
            report.Row($"victim delivery, {name} flood", delivery.ToString(), quietDelivery.ToString(), deliveryRatio, goal, goal is null ? null : deliveryRatio <= TargetRatio);
            report.Row($"  attacker: accepted / 429 / other", $"{outcomes.Accepted} / {outcomes.Limited} / {outcomes.Other}");
            report.Row($"  CPU cores", cpu.ToString());
            StorageRows(report, phase);
            if (outcomes.SocketsOpened + outcomes.SocketsRefused + outcomes.SocketsRateLimited > 0)
            {
                report.Row($"  attacker sockets: open / closed 4029 / handshake 429", $"{outcomes.SocketsOpened} / {outcomes.SocketsRefused} / {outcomes.SocketsRateLimited}");
            }
            phases[name] = new JsonObject
            {
                ["send"] = send.ToJson(),
                ["delivery"] = delivery.ToJson(),
                ["victim_sent"] = sends.Completed,
                ["victim_delivered"] = deliveries.Count,
                ["attacker_accepted"] = outcomes.Accepted,
                ["attacker_limited"] = outcomes.Limited,
                ["attacker_other"] = outcomes.Other,
                ["attacker_sockets_open"] = outcomes.SocketsOpened,
                ["attacker_sockets_refused"] = outcomes.SocketsRefused,
                ["attacker_sockets_rate_limited"] = outcomes.SocketsRateLimited,
                ["cpu_cores"] = cpu.ToJson(),
                ["disk_flush"] = phase.Flushes.ToJson(),
                ["commits"] = phase.Commits.Total,
                ["commits_over_100ms"] = phase.Commits.Slow,
            };
            report.Ratios[$"{name}_send_p50"] = Fmt.R(Report.Ratio(send.P50, quietSend.P50), 2);
            report.Ratios[$"{name}_send_p99"] = Fmt.R(sendRatio, 2);
            report.Ratios[$"{name}_delivery_p99"] = Fmt.R(deliveryRatio, 2);
            if (outcomes.FirstOther is { } other)
            {
                report.Notes.Add($"{name}: first unexpected attacker outcome: {other}");
            }
            if (sends.FirstError is { } error)
            {
                report.Notes.Add($"{name}: first victim error: {error}");
            }
        }
        report.Figures["phases"] = phases;
        report.Figures["victim_errors"] = errors;
        report.Row("victim errors / watcher dropped", $"{errors} / {(watching.Failure is null ? 0 : 1)}");
        if (settings.Postgres is null)
        {
            report.Notes.Add("SQLite has one writer: every accepted write of the attacker queues with the victim's sends.");
        }
        return report;
    }

    private sealed record Phase(LoadResult Sends, Deliveries Deliveries, CpuUse Cpu, LatencySummary Flushes, Commits Commits);

    /// <summary>What the storage did in a phase: the flush probe beside the service, and the service's own commits.</summary>
    private static void StorageRows(Report report, Phase phase)
    {
        report.Row("  disk flush probe (8 KiB + fsync)", phase.Flushes.ToString());
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
