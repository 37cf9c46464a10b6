using System.Text.Json;
using RealtimeChat.Bench;
using Xunit.Abstractions;

namespace RealtimeChat.Bench.Tests;

/// <summary>
/// Each scenario once at a tiny size against a real service process, on SQLite (or on PostgreSQL when
/// CHAT_TEST_DATABASE=postgres, in a database of its own on CHAT_TEST_POSTGRES). Only sanity is asserted:
/// the run completes, counts are non-zero, nothing errors, and the JSON line parses.
/// </summary>
public sealed class TinyScenarioTests(ITestOutputHelper output)
{
    private static HarnessSettings Settings(TextWriter log)
    {
        var postgres = Environment.GetEnvironmentVariable("CHAT_TEST_DATABASE") == "postgres"
            ? Environment.GetEnvironmentVariable("CHAT_TEST_POSTGRES") ?? throw new InvalidOperationException("CHAT_TEST_DATABASE=postgres needs CHAT_TEST_POSTGRES.")
            : null;
        return new HarnessSettings { Postgres = postgres, Log = log };
    }

    private async Task<JsonElement> RunAsync(Func<HarnessSettings, Task<Report>> scenario, string name)
    {
        var log = new StringWriter();
        try
        {
            var report = await scenario(Settings(log));
            report.Write(log);
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
        var line = log.ToString().Split('\n').Last(l => l.StartsWith("{\"scenario\"", StringComparison.Ordinal));
        var json = JsonDocument.Parse(line).RootElement.Clone();
        Assert.Equal(name, json.GetProperty("scenario").GetString());
        Assert.Equal(Environment.GetEnvironmentVariable("CHAT_TEST_DATABASE") == "postgres" ? "postgres" : "sqlite",
            json.GetProperty("parameters").GetProperty("db").GetString());
        return json;
    }

    private static void Latencies(JsonElement latency)
    {
        Assert.True(latency.GetProperty("count").GetInt64() > 0, $"no samples: {latency}");
        var p50 = latency.GetProperty("p50_ms").GetDouble();
        var p99 = latency.GetProperty("p99_ms").GetDouble();
        var max = latency.GetProperty("max_ms").GetDouble();
        Assert.True(p50 > 0 && p50 <= p99 && p99 <= max, $"percentiles out of order: {latency}");
    }

    [Fact]
    public async Task Send()
    {
        var json = await RunAsync(s => SendScenario.RunAsync(s, new SendOptions { Senders = 4, Conversations = 4, Seconds = 1, Rate = 50, Warmup = 0.5, BaselineSeconds = 0.5 }), "send");
        var figures = json.GetProperty("figures");
        Assert.True(figures.GetProperty("sends_per_second").GetDouble() > 0);
        Assert.Equal(0, figures.GetProperty("send_errors").GetInt64());
        Assert.Equal(figures.GetProperty("sent").GetInt64(), figures.GetProperty("delivered_closed_loop").GetInt64());
        Assert.Equal(figures.GetProperty("sent_at_rate").GetInt64(), figures.GetProperty("delivered_at_rate").GetInt64());
        Latencies(figures.GetProperty("send_latency_closed_loop"));
        Latencies(figures.GetProperty("delivery_latency_at_rate"));
        Assert.True(json.GetProperty("baseline").GetProperty("requests_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("ratios").GetProperty("sends_per_second").GetDouble() > 0);
    }

    [Fact]
    public async Task Fanout()
    {
        var json = await RunAsync(s => FanoutScenario.RunAsync(s, new FanoutOptions { Connections = 30, GroupSize = 10, Rate = 15, Seconds = 1, ConnectParallel = 8, BaselineSeconds = 0.5 }), "fanout");
        var figures = json.GetProperty("figures");
        Assert.Equal(0, figures.GetProperty("send_errors").GetInt64());
        Assert.Equal(0, figures.GetProperty("websockets_dropped").GetInt64());
        Assert.True(figures.GetProperty("sent").GetInt64() > 0);
        Assert.Equal(figures.GetProperty("expected").GetInt64(), figures.GetProperty("delivered").GetInt64());
        Assert.True(figures.GetProperty("deliveries_per_second").GetDouble() > 0);
        Assert.True(figures.GetProperty("connect_per_second").GetDouble() > 0);
        Latencies(figures.GetProperty("delivery_latency"));
        Assert.True(json.GetProperty("baseline").GetProperty("deliveries_per_second").GetDouble() > 0);
    }

    [Fact]
    public async Task Bridge()
    {
        var json = await RunAsync(s => BridgeScenario.RunAsync(s, new BridgeOptions { Conversations = 2, Senders = 2, Rate = 20, Seconds = 1, InboundSeconds = 1, BaselineSeconds = 0.5 }), "bridge");
        var figures = json.GetProperty("figures");
        Assert.Equal(0, figures.GetProperty("errors").GetInt64());
        Assert.True(figures.GetProperty("app_messages_sent").GetInt64() > 0);
        Assert.Equal(figures.GetProperty("app_messages_sent").GetInt64(), figures.GetProperty("matrix_events_sent").GetInt64());
        Latencies(figures.GetProperty("send_to_homeserver"));
        Assert.True(figures.GetProperty("transactions").GetInt64() > 0);
        Assert.Equal(figures.GetProperty("transactions").GetInt64(), figures.GetProperty("websocket_events_from_transactions").GetInt64());
        Latencies(figures.GetProperty("transaction_to_websocket"));
    }

    [Fact]
    public async Task Soak()
    {
        var json = await RunAsync(s => SoakScenario.RunAsync(s, new SoakOptions { Rate = 20, Seconds = 3, WarmupSeconds = 1, WindowSeconds = 1, Senders = 2, Conversations = 2, BaselineSeconds = 0.5 }), "soak");
        var figures = json.GetProperty("figures");
        Assert.Equal(0, figures.GetProperty("errors").GetInt64());
        Assert.True(figures.GetProperty("sent").GetInt64() > 0);
        Assert.True(figures.GetProperty("windows").GetArrayLength() >= 3);
        Assert.True(figures.GetProperty("rss_end_mb").GetDouble() > 0);
        Latencies(figures.GetProperty("delivery_latency"));
    }

    [SynapseFact]
    public async Task SynapseBridge()
    {
        var script = Environment.GetEnvironmentVariable("CHAT_TEST_SYNAPSE_SH") is { Length: > 0 } configured ? configured : Synapse.Locate();
        var json = await RunAsync(s => SynapseBridgeScenario.RunAsync(s, new SynapseBridgeOptions
        {
            Rooms = 2, Messages = 3, OutageSeconds = 1, WarmupMessages = 1, MaxWarmupRounds = 2, SynapseScript = script, Rounds = 2,
        }), "synapse-bridge");
        var figures = json.GetProperty("figures");
        Assert.Equal(0, figures.GetProperty("duplicates").GetInt32());
        Assert.True(figures.GetProperty("bridge_events_per_second").GetDouble() > 0);
        Assert.True(figures.GetProperty("paced_events_per_second").GetDouble() > 0);
        Assert.True(figures.GetProperty("backlog_events_per_second").GetDouble() > 0);
        Assert.True(json.GetProperty("baseline").GetProperty("direct_events_per_second").GetDouble() > 0);
        Assert.InRange(figures.GetProperty("warmup_rounds").GetInt32(), 1, 2);
        // Read from the service's runtime metrics: a just-started service compiles while it warms up, and a metric name
        // that changed would read 0 here.
        Assert.True(figures.GetProperty("warmup_jit_seconds").GetDouble() > 0);
        // Every phase ran once in each of the 2 rounds, and its ratio is shown per round.
        foreach (var ratio in new[] { "bridge_vs_direct", "paced_vs_direct", "backlog_vs_direct", "backlog_first_event_seconds" })
        {
            Assert.Equal(2, figures.GetProperty("per_round").GetProperty(ratio).GetArrayLength());
        }
        // The disk probe ran beside every phase.
        foreach (var phase in new[] { "bridge", "direct", "paced", "backlog" })
        {
            Assert.Equal(2, figures.GetProperty("per_round").GetProperty("disk_worst_flush_ms").GetProperty(phase).GetArrayLength());
            Assert.InRange(figures.GetProperty("disk_stalled_share").GetProperty(phase).GetDouble(), 0, 10);
        }
        // The inbound phase: every Matrix user's message of the 2 rounds reached the app and the sender's /sync, timed.
        Assert.Equal(12, figures.GetProperty("inbound_app_ms").GetProperty("count").GetInt64());
        Assert.Equal(12, figures.GetProperty("inbound_sync_ms").GetProperty("count").GetInt64());
        Assert.Equal(0, figures.GetProperty("inbound_missing").GetInt32());
        Assert.True(figures.GetProperty("inbound_synapse_cpu_ms_per_message").GetDouble() > 0);
        // Read from the service's HTTP metrics: a route or metric name that changed would read 0 here.
        Assert.True(figures.GetProperty("inbound_pushes").GetInt32() > 0);
        Assert.True(figures.GetProperty("inbound_push_handling_ms").GetDouble() > 0);
        // Synapse's access log was found and read: every phase's sends are in it, 2 rooms x 3 messages x 2 rounds.
        foreach (var phase in new[] { "bridge", "direct", "paced", "backlog" })
        {
            Assert.Equal(12, figures.GetProperty($"synapse_log_{phase}").GetProperty("sends").GetInt32());
            // Synapse runs in every phase: each event costs it some CPU (and /proc was read).
            Assert.True(figures.GetProperty("synapse_cpu_ms_per_event").GetProperty(phase).GetDouble() > 0);
            Assert.True(figures.GetProperty("synapse_waiting_for_a_core").GetProperty(phase).GetDouble() >= 0);
            // So does the client in this process (its /sync at least) beside the service.
            Assert.True(figures.GetProperty("others_cpu_ms_per_event").GetProperty(phase).GetDouble() > 0);
        }
    }

    [Fact]
    public async Task NoisyNeighbour()
    {
        var json = await RunAsync(s => NoisyNeighbourScenario.RunAsync(s, new NoisyNeighbourOptions
        {
            VictimRate = 5, Seconds = 1, Rounds = 2, FloodWorkers = 4, GroupMembers = 10, UploadBytes = 4096, Sockets = 20, ConnectParallel = 8,
        }), "noisy-neighbour");
        var figures = json.GetProperty("figures");
        Assert.Equal(0, figures.GetProperty("victim_errors").GetInt64());
        Latencies(figures.GetProperty("quiet").GetProperty("send"));
        Latencies(figures.GetProperty("quiet").GetProperty("disk_flush"));
        // Every phase ran in each of the 2 rounds, 5 sends each, and pools them.
        Assert.Equal(10, figures.GetProperty("quiet").GetProperty("send").GetProperty("count").GetInt64());
        Assert.Equal(2, figures.GetProperty("quiet").GetProperty("send_p99_per_round_ms").GetArrayLength());
        // The victim's own sends are commits.
        Assert.True(figures.GetProperty("quiet").GetProperty("commits").GetInt64() > 0);
        foreach (var phase in new[] { "edits", "reactions", "groups", "uploads", "sockets" })
        {
            var figure = figures.GetProperty("phases").GetProperty(phase);
            Latencies(figure.GetProperty("send"));
            Assert.Equal(10, figure.GetProperty("send").GetProperty("count").GetInt64());
            // The sends on a calm disk are some of those 10 (none when the probe stalled throughout).
            Assert.InRange(figure.GetProperty("send_calm_disk").GetProperty("count").GetInt64(), 0, 10);
            Assert.Equal(0, figure.GetProperty("attacker_other").GetInt64());
            // The sockets flood sends only once its 20 connects are done, which on a loaded machine can take its whole
            // second (CI, once); its outcome is the sockets opened and refused, asserted below.
            Assert.True(phase == "sockets" || figure.GetProperty("attacker_accepted").GetInt64() + figure.GetProperty("attacker_limited").GetInt64() > 0, phase);
            Assert.True(json.GetProperty("ratios").GetProperty($"{phase}_send_p99").GetDouble() > 0, phase);
        }
        // 20 sockets against the default cap of 16, in each round: the first round's are closed before the second's open.
        Assert.Equal(32, figures.GetProperty("phases").GetProperty("sockets").GetProperty("attacker_sockets_open").GetInt64());
        Assert.Equal(8, figures.GetProperty("phases").GetProperty("sockets").GetProperty("attacker_sockets_refused").GetInt64());
    }
}

/// <summary>
/// Needs a real Synapse (synapse.sh, as the service's real-Synapse suite): without one it is reported as skipped with the
/// reason; with <c>CHAT_TEST_SYNAPSE=required</c> (what scripts/test.sh sets when Synapse is present) it runs and fails.
/// </summary>
public sealed class SynapseFactAttribute : FactAttribute
{
    public SynapseFactAttribute()
    {
        var configured = Environment.GetEnvironmentVariable("CHAT_TEST_SYNAPSE_SH");
        var found = configured is { Length: > 0 } ? File.Exists(configured) : Synapse.Locate() is not null;
        if (!found && Environment.GetEnvironmentVariable("CHAT_TEST_SYNAPSE") != "required")
        {
            Skip = "synapse-bridge NOT RUN: no synapse.sh (set CHAT_TEST_SYNAPSE_SH or provide ../shared/synapse).";
        }
    }
}
