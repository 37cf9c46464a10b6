using System.CommandLine;
using RealtimeChat.Bench;

// One command per scenario; each starts the service (Release build) as a separate process, measures a trivial
// baseline in the same run, prints a table and one JSON line. See docs/performance.md.
var root = new RootCommand("RealtimeChat benchmark harness: send, fanout, bridge, soak, synapse-bridge, noisy-neighbour.");
var db = new Option<string>("--db") { Description = "sqlite or postgres (postgres needs --postgres or CHAT_PG_CONNECTION).", DefaultValueFactory = _ => "sqlite" };
var postgres = new Option<string?>("--postgres") { Description = "PostgreSQL server connection string (a database is created and dropped).", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("CHAT_PG_CONNECTION") };
var serviceDll = new Option<string?>("--service-dll") { Description = "The service's RealtimeChat.dll (default: src/RealtimeChat/bin/Release/net10.0)." };
var logLevel = new Option<string>("--service-log-level") { Description = "Log level the service runs at.", DefaultValueFactory = _ => "Warning" };
var serviceArgs = new Option<string[]>("--service-arg") { Description = "Extra service setting, e.g. --service-arg=--Matrix:MaxRoomsInFlight=16 (repeatable).", DefaultValueFactory = _ => [] };
Option[] common = [db, postgres, serviceDll, logLevel, serviceArgs];

HarnessSettings Settings(ParseResult p)
{
    var settings = new HarnessSettings { ServiceLogLevel = p.GetValue(logLevel)!, Log = Console.Out, ExtraServiceArgs = p.GetValue(serviceArgs) ?? [] };
    if (p.GetValue(serviceDll) is { } dll)
    {
        settings = settings with { ServiceDll = Path.GetFullPath(dll) };
    }
    if (p.GetValue(db) == "postgres")
    {
        settings = settings with { Postgres = p.GetValue(postgres) ?? throw new ArgumentException("--db postgres needs --postgres or CHAT_PG_CONNECTION.") };
    }
    return settings;
}

Command Scenario(string name, string description, Option[] options, Func<ParseResult, HarnessSettings, Task<Report>> run)
{
    var command = new Command(name, description);
    foreach (var option in options.Concat(common))
    {
        command.Options.Add(option);
    }
    command.SetAction(async (ParseResult p, CancellationToken _) =>
    {
        var settings = Settings(p);
        var report = await run(p, settings);
        if (settings.ExtraServiceArgs.Count > 0)
        {
            report.Parameters["service_args"] = string.Join(' ', settings.ExtraServiceArgs);
        }
        if (Environment.GetEnvironmentVariable("CHAT_BENCH_COMMIT") is { Length: > 0 } commit)
        {
            report.Parameters["commit"] = commit;
        }
        if (Environment.GetEnvironmentVariable("DOTNET_gcServer") is { } gc)
        {
            report.Parameters["DOTNET_gcServer"] = gc;
        }
        report.Write(Console.Out);
        return 0;
    });
    return command;
}

Option<int> Int(string name, int value, string description) => new(name) { Description = description, DefaultValueFactory = _ => value };
Option<double> Num(string name, double value, string description) => new(name) { Description = description, DefaultValueFactory = _ => value };

{
    var senders = Int("--senders", 64, "Concurrent senders.");
    var conversations = Int("--conversations", 64, "Conversations, each watched by one WebSocket member.");
    var seconds = Num("--seconds", 20, "Length of each measured phase.");
    var rate = Num("--rate", 1000, "Sends/s of the fixed-rate phase (0 skips it).");
    var warmup = Num("--warmup", 3, "Warm-up seconds (not measured).");
    var baseline = Num("--baseline-seconds", 10, "Length of each baseline phase.");
    root.Subcommands.Add(Scenario("send", "C senders post to M conversations over HTTP; each conversation has one WebSocket watcher.",
        [senders, conversations, seconds, rate, warmup, baseline],
        (p, s) => SendScenario.RunAsync(s, new SendOptions
        {
            Senders = p.GetValue(senders), Conversations = p.GetValue(conversations), Seconds = p.GetValue(seconds),
            Rate = p.GetValue(rate), Warmup = p.GetValue(warmup), BaselineSeconds = p.GetValue(baseline),
        })));
}
{
    var connections = Int("--connections", 10_000, "WebSockets to open.");
    var groupSize = Int("--group-size", 1000, "Members per conversation.");
    // Deliveries/s can never exceed what is offered: offer more than the 100,000/s target so the figure is capacity.
    var rate = Num("--rate", 120, "Sends/s in total (each by a conversation's owner); with groups of 1,000 the default offers 120,000 deliveries/s.");
    var seconds = Num("--seconds", 20, "Length of the sending phase.");
    var parallel = Int("--connect-parallel", 64, "Concurrent WebSocket handshakes.");
    var baseline = Num("--baseline-seconds", 10, "Length of the baseline broadcast phase.");
    root.Subcommands.Add(Scenario("fanout", "W WebSockets over conversations of G members; owners post; every member receives.",
        [connections, groupSize, rate, seconds, parallel, baseline],
        (p, s) => FanoutScenario.RunAsync(s, new FanoutOptions
        {
            Connections = p.GetValue(connections), GroupSize = p.GetValue(groupSize), Rate = p.GetValue(rate),
            Seconds = p.GetValue(seconds), ConnectParallel = p.GetValue(parallel), BaselineSeconds = p.GetValue(baseline),
        })));
}
{
    var conversations = Int("--conversations", 16, "Bridged conversations (one Matrix room each).");
    var senders = Int("--senders", 64, "Concurrent senders.");
    var rate = Num("--rate", 1000, "Sends/s while bridging.");
    var seconds = Num("--seconds", 20, "Length of the outbound phase.");
    var inbound = Num("--inbound-seconds", 10, "Length of the inbound (appservice transaction) phase.");
    var concurrency = Int("--inbound-concurrency", 1, "Transactions in flight (Synapse sends one at a time).");
    var baseline = Num("--baseline-seconds", 5, "Length of each baseline phase.");
    root.Subcommands.Add(Scenario("bridge", "Matrix appservice bridge against the homeserver emulator: outbox drain and inbound transactions.",
        [conversations, senders, rate, seconds, inbound, concurrency, baseline],
        (p, s) => BridgeScenario.RunAsync(s, new BridgeOptions
        {
            Conversations = p.GetValue(conversations), Senders = p.GetValue(senders), Rate = p.GetValue(rate), Seconds = p.GetValue(seconds),
            InboundSeconds = p.GetValue(inbound), InboundConcurrency = p.GetValue(concurrency), BaselineSeconds = p.GetValue(baseline),
        })));
}
{
    var rate = Num("--rate", 500, "Sends/s.");
    var seconds = Num("--seconds", 300, "Length of the soak.");
    var warmup = Num("--warmup", 60, "Seconds counted as warm-up.");
    var window = Num("--window", 10, "Sampling window in seconds.");
    var senders = Int("--senders", 16, "Concurrent senders.");
    var conversations = Int("--conversations", 16, "Conversations, each watched by one WebSocket member.");
    var baseline = Num("--baseline-seconds", 10, "Length of each baseline phase.");
    root.Subcommands.Add(Scenario("soak", "A fixed send rate for minutes: memory and latency per window.",
        [rate, seconds, warmup, window, senders, conversations, baseline],
        (p, s) => SoakScenario.RunAsync(s, new SoakOptions
        {
            Rate = p.GetValue(rate), Seconds = p.GetValue(seconds), WarmupSeconds = p.GetValue(warmup), WindowSeconds = p.GetValue(window),
            Senders = p.GetValue(senders), Conversations = p.GetValue(conversations), BaselineSeconds = p.GetValue(baseline),
        })));
}
{
    var rooms = Int("--rooms", 8, "Rooms (conversations), sent to in parallel, each in order.");
    var messages = Int("--messages", 50, "Messages per room in each phase.");
    var outage = Num("--outage-seconds", 10, "How long Synapse is stopped before the backlog phase.");
    var warmup = Int("--warmup-messages", 10, "Messages per room sent both ways in each untimed warm-up round (0: start cold).");
    var warmupRounds = Int("--warmup-rounds", 15, "Warm-up rounds at most; they stop once the service compiles (JIT) for under 2 % of a round.");
    var script = new Option<string?>("--synapse-sh") { Description = "synapse.sh (default: CHAT_BENCH_SYNAPSE_SH, ../shared/synapse, /work/shared/synapse)." };
    var isolate = new Option<bool>("--isolate-synapse")
    {
        Description = "Synapse alone on the last core, the service, PostgreSQL and this client on the others (taskset): the homeserver as if on a machine of its own.",
    };
    var synapseRounds = Int("--rounds", 3, "Every phase once per round, the order rotated each round (bridge, direct, paced; direct, paced, bridge; ...), each round ending with the backlog; figures pool the rounds.");
    root.Subcommands.Add(Scenario("synapse-bridge", "The bridge against a real Synapse vs a plain appservice client on the same homeserver.",
        [rooms, messages, outage, warmup, warmupRounds, script, isolate, synapseRounds],
        (p, s) => SynapseBridgeScenario.RunAsync(s, new SynapseBridgeOptions
        {
            Rooms = p.GetValue(rooms), Messages = p.GetValue(messages), OutageSeconds = p.GetValue(outage), WarmupMessages = p.GetValue(warmup),
            MaxWarmupRounds = p.GetValue(warmupRounds), SynapseScript = p.GetValue(script), IsolateSynapse = p.GetValue(isolate),
            Rounds = p.GetValue(synapseRounds),
        })));
}
{
    var victimRate = Num("--victim-rate", 10, "The victim's sends/s (under its own 20/s limit).");
    var seconds = Num("--seconds", 15, "Length of the quiet phase and of each flood, in each round.");
    var rounds = Int("--rounds", 4, "How many times every phase runs (each round in a rotated order); a phase's figures pool its rounds.");
    var workers = Int("--flood-workers", 32, "Requests the attacker keeps in flight.");
    var members = Int("--group-members", 1000, "Members of each group the attacker creates.");
    var uploadBytes = Int("--upload-bytes", 256 * 1024, "Size of each file the attacker uploads.");
    var sockets = Int("--sockets", 2000, "WebSockets the attacker tries to open.");
    var parallel = Int("--connect-parallel", 64, "Concurrent WebSocket handshakes of the attacker.");
    root.Subcommands.Add(Scenario("noisy-neighbour", "A victim's send and delivery latency, quiet and while one user floods each write class in turn.",
        [victimRate, seconds, rounds, workers, members, uploadBytes, sockets, parallel],
        (p, s) => NoisyNeighbourScenario.RunAsync(s, new NoisyNeighbourOptions
        {
            VictimRate = p.GetValue(victimRate), Seconds = p.GetValue(seconds), Rounds = p.GetValue(rounds), FloodWorkers = p.GetValue(workers), GroupMembers = p.GetValue(members),
            UploadBytes = p.GetValue(uploadBytes), Sockets = p.GetValue(sockets), ConnectParallel = p.GetValue(parallel),
        })));
}
{
    var port = new Option<int>("--port") { Required = true };
    var server = new Command("baseline-server", "The trivial baseline server (started by the scenarios).") { port };
    server.SetAction(async (ParseResult p, CancellationToken ct) => await BaselineServer.RunAsync(p.GetValue(port), ct));
    root.Subcommands.Add(server);
}

return await root.Parse(args).InvokeAsync();
