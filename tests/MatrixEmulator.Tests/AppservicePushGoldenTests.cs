using System.Text.Json.Nodes;
using Xunit;
using static MatrixEmulator.Tests.PushTranscripts;

namespace MatrixEmulator.Tests;

/// <summary>Replays the scenarios and checks what reached the appservice against what Synapse pushed.</summary>
[Collection(TimingSensitive.Name)]
public sealed class AppservicePushGoldenTests
{
    private const string HsToken = "hs_token_test_0123456789";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Pushes_match_the_recording_including_the_first_listener_outage()
    {
        // The recording's first listener failed every push, so the whole scenario was delivered after it was replaced.
        await using var appservice = await AppserviceListener.StartAsync(ListenerMode.Abort);
        const double timeScale = 0.02;
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = timeScale,
        });
        emulator.CreateUser("nova-service", "servicepass");
        emulator.CreateUser("human", "humanpass");
        var replay = new ClientServerReplay(emulator, new IdMap());

        await replay.RunAsync(Golden.Load("client_server.jsonl"), async step =>
        {
            if (step == "as_join_ghost_b")
            {
                // Synapse persisted createRoom's events one by one; the rest of the run came while the appservice was down.
                await UntilAsync(() => !emulator.Appservice.ServiceUp, Patience);
            }
        });

        // The recording's first listener saw transaction 1 twice before it was replaced.
        await emulator.Appservice.WaitForAsync(a => a.Count >= 3, Patience);
        appservice.Mode = ListenerMode.Ok;

        var recorded = Golden.Load("appservice_push.jsonl");
        var recordedDelivered = recorded.Where(r => ((string)r["listener"]!).StartsWith("second", StringComparison.Ordinal)).ToList();
        await emulator.Appservice.WaitForAsync(a => a.Count(x => x.Succeeded) >= recordedDelivered.Count, Patience);
        await emulator.Appservice.WaitUntilIdleAsync(Patience);
        var attempts = emulator.Appservice.Attempts;

        var delivered = attempts.Where(a => a.Succeeded).ToList();
        Assert.Equal(recordedDelivered.Count, delivered.Count);
        Assert.Equal(Enumerable.Range(1, recordedDelivered.Count).Select(i => (long)i), delivered.Select(a => a.TxnId));
        for (var i = 0; i < delivered.Count; i++)
        {
            var expectedPath = ((string)recordedDelivered[i]["path"]!).Replace("<hs_token>", HsToken);
            Assert.Equal(expectedPath, delivered[i].Path);
            Assert.Null(delivered[i].Authorization);
            Assert.Single((JsonArray)delivered[i].Body["events"]!);
            replay.Ids.AssertMatches(recordedDelivered[i]["body"], delivered[i].Body, $"transaction {delivered[i].TxnId}");
        }

        // What the appservice itself received: the same paths, no Authorization header.
        var received = appservice.Received.Where(r => r.Answered == 200).ToList();
        Assert.Equal(recordedDelivered.Select(r => ((string)r["path"]!).Replace("<hs_token>", HsToken)), received.Select(r => r.PathAndQuery));
        Assert.All(received, r => Assert.Null(r.Authorization));

        // Before that, transaction 1 was re-sent with the same event at growing intervals (2 s, 4 s, 8 s... scaled).
        var failed = attempts.TakeWhile(a => !a.Succeeded).ToList();
        Assert.True(failed.Count >= 2, $"expected retries of transaction 1, got {failed.Count} failed attempts");
        Assert.All(failed, a => Assert.Equal(1, a.TxnId));
        Assert.All(failed, a => Assert.Equal(delivered[0].EventIds, a.EventIds));
        AssertBackoff(failed.Append(delivered[0]).ToList(), TimeSpan.FromSeconds(2) * timeScale);
    }

    [Fact]
    public async Task Fault_phases_match_the_recording()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        const double timeScale = 0.05;
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = timeScale,
            MessageRateLimit = new RateLimit(0.5, 5),
        });
        emulator.CreateUser("human", "humanpass");
        var pusher = emulator.Appservice;
        var backAt = DateTimeOffset.MinValue;

        async Task BeforeStep(string step)
        {
            if (!step.StartsWith("human_flood_", StringComparison.Ordinal) || step == "human_flood_0")
            {
                emulator.ResetRateLimits();
            }

            // Synapse persisted events more slowly than this appservice answered, so while it was healthy each event
            // went alone; sending the next step only once the pusher is idle reproduces that.
            if (appservice.Mode == ListenerMode.Ok && pusher.ServiceUp)
            {
                await pusher.WaitUntilIdleAsync(Patience);
            }

            switch (step)
            {
                case "human_send_while_as_down_0":
                    // The appservice stops answering: each push hangs a while and then loses its connection.
                    appservice.AbortAfter = TimeSpan.FromMilliseconds(400);
                    appservice.Mode = ListenerMode.Abort;
                    break;
                case "human_send_while_as_down_1":
                    // The next four messages arrive while the first one's push is still hanging.
                    await UntilAsync(() => appservice.Received.Any(r => Bodies(r.Body).Contains("while down 0")), Patience);
                    break;
                case "human_send_as_failing":
                    await Task.Delay(TimeSpan.FromSeconds(20) * timeScale);
                    appservice.Mode = ListenerMode.Ok;
                    backAt = DateTimeOffset.UtcNow;
                    await pusher.WaitUntilIdleAsync(Patience);
                    appservice.Mode = ListenerMode.Answer500;
                    break;
                case "human_send_after_recovery":
                    await UntilAsync(() => appservice.Received.Count(r => r.Answered == 500) == 3, Patience);
                    appservice.Mode = ListenerMode.Ok;
                    break;
            }
        }

        await new ClientServerReplay(emulator, new IdMap()).RunAsync(Golden.Load("faults_client_server.jsonl"), BeforeStep);
        await pusher.WaitUntilIdleAsync(Patience);

        // Everything the appservice answered, as the recording lists it (the aborted pushes never reached its listener).
        var recorded = Golden.Load("faults_appservice_push.jsonl").Where(r => r.ContainsKey("answered")).ToList();
        var answered = appservice.Received.Where(r => r.Method == "PUT" && r.Answered != 0).ToList();
        const int txnOffset = 19;
        Assert.Equal(
            recorded.Select(r => $"{r["answered"]} {((string)r["path"]!).Replace("<hs_token>", HsToken)} {Describe((JsonArray)r["events"]!)}"),
            answered.Select(r => $"{r.Answered} {Renumber(r.PathAndQuery, txnOffset)} {Describe(r.Body)}"));
        Assert.All(answered, r => Assert.Null(r.Authorization));

        // The unregistered ghost was queried before its invite was pushed; the alias after.
        var all = appservice.Received.ToList();
        var userQuery = all.FindIndex(r => r.Method == "GET" && r.PathAndQuery.StartsWith("/users/", StringComparison.Ordinal));
        var invitePush = all.FindIndex(r => r.Body?["events"]?[0]?["state_key"]?.ToString() == "@nova_0049a96a0037413db5df2ddbccad0f50:localhost");
        Assert.InRange(userQuery, 0, invitePush - 1);

        var attempts = pusher.Attempts;

        // Down: the first message's transaction was retried by the recoverer and got through only after the listener came back.
        var downTxn = attempts.First(a => Bodies(a.Body).Contains("while down 0")).TxnId;
        var downAttempts = attempts.Where(a => a.TxnId == downTxn).ToList();
        Assert.True(downAttempts.Count >= 3, $"expected recoverer retries, got {downAttempts.Count} attempts");
        Assert.True(downAttempts[^1].At >= backAt, "delivered before the appservice came back");
        AssertBackoff(downAttempts, TimeSpan.FromSeconds(2) * timeScale);

        // 500: the same transaction after 2 s, 4 s, 8 s (scaled), then the next one at once.
        var failingTxn = attempts.First(a => Bodies(a.Body).Contains("while failing")).TxnId;
        var failing = attempts.Where(a => a.TxnId == failingTxn).ToList();
        Assert.Equal([500, 500, 500, 200], failing.Select(a => a.Status ?? 0));
        Assert.All(failing, a => Assert.Equal(failing[0].EventIds, a.EventIds));
        AssertBackoff(failing, TimeSpan.FromSeconds(2) * timeScale);
        var next = attempts.First(a => a.TxnId == failingTxn + 1);
        Assert.True(next.At - failing[^1].At < TimeSpan.FromSeconds(1) * timeScale, "the next transaction should follow the recovered one immediately");
    }

    // Each gap is at least the recoverer's delay, which starts at `first` and doubles per failure.
    private static void AssertBackoff(List<PushAttempt> attempts, TimeSpan first)
    {
        var trace = string.Join("; ", attempts.Select(a => $"txn {a.TxnId} at {a.At:ss.fff} took {a.Duration.TotalMilliseconds:F0} ms: {a.Status?.ToString() ?? a.Error}"));
        for (var i = 1; i < attempts.Count; i++)
        {
            var gap = attempts[i].At - (attempts[i - 1].At + attempts[i - 1].Duration);
            var expected = first * Math.Pow(2, i - 1);
            Assert.True(gap >= expected * 0.9, trace + $" => retry {i} came after {gap.TotalMilliseconds} ms, expected at least {expected.TotalMilliseconds} ms");
            Assert.True(gap < expected * 2 + TimeSpan.FromMilliseconds(250), trace + $" => retry {i} came after {gap.TotalMilliseconds} ms, expected about {expected.TotalMilliseconds} ms");
        }
    }

    private static string Renumber(string path, int offset)
    {
        var start = "/transactions/".Length;
        var end = path.IndexOf('?', StringComparison.Ordinal);
        return $"/transactions/{long.Parse(path[start..end]) + offset}{path[end..]}";
    }
}
