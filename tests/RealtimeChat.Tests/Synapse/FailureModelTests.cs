using System.Diagnostics;
using System.Text.Json.Nodes;
using RealtimeChat.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RealtimeChat.Tests.Synapse;

/// <summary>Synapse's real failure model, a Synapse of its own per test (b, c's outage and d in both modes): b (restart, then idle),
/// c (an outage while the app sends; a kill -9 of Synapse, or of the service, in the middle of a burst; Synapse restarted
/// and killed while humans write), d (a malformed relation from a client).</summary>
[Collection(SynapseCollection.Name)]
public sealed class FailureModelTests(ITestOutputHelper output)
{
    /// <summary>How long to wait for what today's code is known to lose (keeps a failing run short).</summary>
    private static readonly TimeSpan LossWait = TimeSpan.FromSeconds(15);

    [SynapseFact]
    public Task B_after_a_synapse_restart_a_humans_messages_still_reach_the_app() => RestartThenIdleAsync("Appservice");

    [SynapseFact]
    public Task B_after_a_synapse_restart_a_humans_messages_still_reach_the_app_in_client_mode() => RestartThenIdleAsync("Client");

    private async Task RestartThenIdleAsync(string mode)
    {
        await using var bridge = await SynapseBridge.StartAsync(mode);
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Restart then idle");
        using var _ = human;
        await using var socket = await bridge.Server.ConnectAsync(alice);
        foreach (var i in Enumerable.Range(1, 3))
        {
            await human.SendTextAsync(roomId, $"before restart {i}");
            await socket.WaitForAsync(f => f.Type == "message.new" && f.Content() == $"before restart {i}", HappyPath.Wait);
        }

        // A deploy of the homeserver; then nobody does anything until a human writes again.
        await bridge.Homeserver.RestartAsync();
        foreach (var i in Enumerable.Range(1, 3))
        {
            await human.SendTextAsync(roomId, $"after restart {i}");
        }

        List<string?> history = [];
        try
        {
            await SynapseBridge.EventuallyAsync(async () =>
            {
                history = await bridge.HistoryAsync(alice, conversation);
                return history.Count(c => c?.StartsWith("after restart", StringComparison.Ordinal) == true) >= 3;
            }, "the messages sent after the restart", LossWait);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"Lost after a Synapse restart: the app has [{string.Join(", ", history)}] ({LossWait.TotalSeconds} s after the sends).");
        }
        Assert.Equal(["before restart 1", "before restart 2", "before restart 3", "after restart 1", "after restart 2", "after restart 3"], history);
    }

    [SynapseFact]
    public Task B_what_humans_wrote_while_the_service_was_down_reaches_the_app_whole_and_in_order() => ServiceDownAsync("Appservice");

    [SynapseFact]
    public Task B_what_humans_wrote_while_the_service_was_down_reaches_the_app_whole_and_in_order_in_client_mode() => ServiceDownAsync("Client");

    /// <summary>More than one /sync timeline holds (100 events): client mode gets a "limited" timeline and must read the rest.</summary>
    private async Task ServiceDownAsync(string mode)
    {
        const int count = 150;
        await using var bridge = await SynapseBridge.StartAsync(mode);
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Busy while the service was down");
        using var _ = human;
        await human.SendTextAsync(roomId, "before the stop");
        await SynapseBridge.EventuallyAsync(async () => (await bridge.HistoryAsync(alice, conversation)).Count == 1, "the first message");

        List<string?> expected = ["before the stop", .. Enumerable.Range(1, count).Select(i => $"while down {i}")];
        await bridge.WhileServiceStoppedAsync(async () =>
        {
            foreach (var body in expected.Skip(1))
            {
                await human.SendTextAsync(roomId, body!);
            }
        });

        List<string?> history = [];
        try
        {
            await SynapseBridge.EventuallyAsync(async () => (history = await bridge.HistoryAsync(alice, conversation)).Count >= expected.Count,
                "every message written while the service was down", TimeSpan.FromSeconds(90));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The app has {history.Count} of {expected.Count} messages; missing [{string.Join(", ", expected.Except(history).Take(20))}…].");
        }
        Assert.Equal(expected, history);
    }

    [SynapseFact]
    public Task C_messages_sent_during_an_outage_reach_the_room_once_each_in_order() => OutageAsync("Appservice");

    [SynapseFact]
    public Task C_messages_sent_during_an_outage_reach_the_room_once_each_in_order_in_client_mode() => OutageAsync("Client");

    private async Task OutageAsync(string mode)
    {
        const int count = 30;
        var outage = TimeSpan.FromSeconds(15);
        await using var bridge = await SynapseBridge.StartAsync(mode);
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Outage");
        using var _ = human;
        var client = bridge.Server.Client(alice);

        await bridge.Homeserver.StopAsync();
        var down = Stopwatch.StartNew();
        var expected = new List<string>();
        foreach (var i in Enumerable.Range(1, count))
        {
            expected.Add($"outage {i}");
            await client.SendAsync(conversation, $"outage {i}");
            // The sends are spread over most of the outage, as users would make them.
            await Task.Delay(outage * 0.8 / count);
        }
        if (outage - down.Elapsed is { Ticks: > 0 } rest)
        {
            await Task.Delay(rest);
        }
        await bridge.Homeserver.StartAgainAsync();
        var downFor = down.Elapsed;
        var up = Stopwatch.StartNew();

        var room = await SynapseBridge.RoomMessagesAsync(human, roomId, m => m.Count(e => e.Body?.Contains("outage ", StringComparison.Ordinal) == true) >= count,
            $"all {count} messages in the room", TimeSpan.FromSeconds(60));
        output.WriteLine($"{count} messages in the room {up.Elapsed.TotalSeconds:F1} s after Synapse answered again (down {downFor.TotalSeconds:F1} s from stop to answering)");
        foreach (var message in await bridge.MessagesAsync(alice, conversation))
        {
            await HappyPath.MatrixStateAsync(client, conversation, message.GetProperty("id").GetGuid(), "sent");
        }
        room = await human.MessagesAsync(roomId);
        Assert.Equal(expected.Select(b => bridge.BodyOf(alice, b)), room.Select(e => e.Body).Where(b => b?.Contains("outage ", StringComparison.Ordinal) == true));
    }

    [SynapseFact]
    public async Task C_a_synapse_kill_in_the_middle_of_a_burst_duplicates_nothing()
    {
        // As many rooms as the dispatcher sends to at once (Matrix:MaxRoomsInFlight, 8), so several sends are in
        // flight at each kill: a send Synapse stored but never answered is what a retry duplicates.
        const int rooms = 8, perRoom = 25, total = rooms * perRoom;
        await using var bridge = await SynapseBridge.StartAsync();
        var alice = Guid.NewGuid();
        var client = bridge.Server.Client(alice);
        var human = await bridge.Homeserver.CreateUserAsync($"reader{Guid.NewGuid():N}"[..14]);
        var conversations = new List<(Guid Id, string RoomId)>();
        foreach (var k in Enumerable.Range(1, rooms))
        {
            var conversation = await client.CreateGroupAsync($"Burst {k}");
            var roomId = await bridge.RoomOfAsync(conversation);
            await bridge.InviteAsync(roomId, human.UserId);
            await human.JoinAsync(roomId);
            conversations.Add((conversation, roomId));
        }
        await using var watcher = await SyncWatcher.StartAsync(human);

        var posting = Task.WhenAll(conversations.Select(async (c, k) =>
        {
            var sender = bridge.Server.Client(alice);
            for (var i = 1; i <= perRoom; i++)
            {
                await sender.SendAsync(c.Id, $"burst {k + 1}/{i}");
            }
        }));
        var clock = Stopwatch.StartNew();
        // Three kill -9 and start cycles while the bridge is sending: at a quarter, half and three quarters of the burst.
        foreach (var fraction in new[] { 0.25, 0.5, 0.75 })
        {
            await SynapseBridge.EventuallyAsync(() => Task.FromResult(watcher.Count >= total * fraction), $"{fraction:P0} of the burst on Matrix", TimeSpan.FromSeconds(90));
            await bridge.Homeserver.KillAsync();
            output.WriteLine($"killed Synapse at {watcher.Count}/{total} seen ({clock.Elapsed.TotalSeconds:F1} s)");
            await bridge.Homeserver.StartAgainAsync();
        }
        await posting;
        await SynapseBridge.EventuallyAsync(() => Task.FromResult(watcher.Messages.Select(m => m.Event.Body).Distinct().Count() >= total),
            "the whole burst on Matrix", TimeSpan.FromSeconds(120));
        output.WriteLine($"whole burst seen after {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var (id, _) in conversations)
        {
            await SynapseBridge.EventuallyAsync(async () =>
                (await bridge.MessagesAsync(alice, id)).All(m => m.GetProperty("matrix").GetProperty("state").GetString() == "sent"),
                "every message sent", TimeSpan.FromSeconds(60));
        }

        var duplicates = new List<string>();
        var disorders = new List<string>();
        foreach (var (k, (_, roomId)) in conversations.Index())
        {
            var bodies = (await human.MessagesAsync(roomId)).Select(e => e.Body!).ToList();
            duplicates.AddRange(bodies.GroupBy(b => b).Where(g => g.Count() > 1).Select(g => $"{g.Key} ×{g.Count()}"));
            var distinct = bodies.Distinct().ToList();
            var expected = Enumerable.Range(1, perRoom).Select(i => $"burst {k + 1}/{i}").ToList();
            if (!distinct.SequenceEqual(expected))
            {
                disorders.Add($"room {k + 1}: {distinct.Count} distinct, first difference at {distinct.Zip(expected).TakeWhile(p => p.First == p.Second).Count()}");
            }
        }
        output.WriteLine($"{duplicates.Count} duplicates in {total} messages");
        Assert.True(duplicates.Count == 0, $"{duplicates.Count} duplicated in the room after kill -9 of Synapse: {string.Join(", ", duplicates)}");
        Assert.True(disorders.Count == 0, string.Join("; ", disorders));
    }

    [SynapseFact]
    public async Task C_a_send_that_timed_out_on_a_hung_synapse_is_not_posted_twice_when_synapse_restarts()
    {
        // The service gives up on a request after 3 s and then waits at least 8 s before trying again: the window in
        // which Synapse, woken up, stores the event it was sent and then restarts, forgetting the txnId.
        await using var bridge = await SynapseBridge.StartAsync(settings: new()
        {
            ["Matrix:RequestTimeout"] = "00:00:03",
            ["Matrix:MinRetryDelay"] = "00:00:10",
            ["Matrix:MaxRetryDelay"] = "00:00:10",
        });
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Hung homeserver");
        using var _ = human;
        var client = bridge.Server.Client(alice);
        const string text = "sent while Synapse hung";
        // The room's set-up (joins) is sent before this, in order: nothing else of this room is in flight at the freeze.
        var warmUp = await client.SendAsync(conversation, "before the hang");
        await HappyPath.MatrixStateAsync(client, conversation, warmUp.GetProperty("id").GetGuid(), "sent");

        await bridge.Homeserver.FreezeAsync();
        Guid messageId;
        try
        {
            messageId = (await client.SendAsync(conversation, text)).GetProperty("id").GetGuid();
            // The send reached Synapse and timed out: the API shows the attempt's error.
            await SynapseBridge.EventuallyAsync(async () =>
            {
                var message = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages/{messageId}");
                return message.GetProperty("matrix") is { ValueKind: System.Text.Json.JsonValueKind.Object } matrix
                    && matrix.GetProperty("error").ValueKind == System.Text.Json.JsonValueKind.String;
            }, "the send to time out", TimeSpan.FromSeconds(30));
        }
        finally
        {
            await bridge.Homeserver.ThawAsync();
        }
        // Woken up, Synapse stores the event whose answer nobody waits for any more ...
        await SynapseBridge.RoomMessagesAsync(human, roomId, m => m.Any(e => e.Body == text), "the event Synapse stored after waking up", TimeSpan.FromSeconds(30));
        var before = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages/{messageId}");
        // ... and restarts (a deploy, a crash) before the service's next attempt.
        await bridge.Homeserver.KillAsync();
        await bridge.Homeserver.StartAgainAsync();
        output.WriteLine($"at the kill the message stood at {before.GetProperty("matrix")}");

        await HappyPath.MatrixStateAsync(client, conversation, messageId, "sent", TimeSpan.FromSeconds(90));
        var copies = (await human.MessagesAsync(roomId)).Count(e => e.Body == text);
        Assert.True(copies == 1, $"The message is in the room {copies} times: its retry after the restart was posted again.");
    }

    [SynapseFact]
    public async Task C_a_service_kill_in_the_middle_of_bursts_both_ways_loses_duplicates_and_reorders_nothing()
    {
        const int appCount = 100;
        // The killed process's leases must run out before the next one may send to its room.
        await using var bridge = await SynapseBridge.StartAsync(settings: new() { ["Matrix:PortalLease"] = "00:00:05" });
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Service killed");
        using var _ = human;
        await bridge.Server.StopAsync();
        await using var first = await bridge.StartProcessAsync();
        var api = ServiceProcess.Client(first.BaseAddress!, alice);
        List<string?> appBodies = [.. Enumerable.Range(1, appCount).Select(i => $"app {i}")];
        List<string?> humanBodies = [];
        async Task<List<string?>> RoomAsync() =>
            [.. (await human.MessagesAsync(roomId)).Select(e => e.Body).Where(b => b?.StartsWith("app ", StringComparison.Ordinal) == true)];
        async Task<List<string?>> HumanInAppAsync() =>
            [.. (await SynapseBridge.MessagesAsync(api, conversation)).Select(m => m.GetProperty("content").GetString())
                .Where(c => c?.StartsWith("human ", StringComparison.Ordinal) == true)];

        // The human writes from before the kill until after Synapse's recovery from it has ended: a message created as
        // that recovery ends is the one Synapse 1.67 can leave unsent (AppserviceTransactionGaps).
        using var humanDone = new CancellationTokenSource();
        var humanSends = Task.Run(async () =>
        {
            for (var i = 1; !humanDone.IsCancellationRequested; i++)
            {
                await human.SendTextAsync(roomId, $"human {i}");
                humanBodies.Add($"human {i}");
                await Task.Delay(50);
            }
        });
        await SynapseBridge.EventuallyAsync(async () => (await HumanInAppAsync()).Count >= 5, "the human's first messages in the app");
        // The app's burst is stored at once and bridged over the next seconds; the kill comes with both directions under way.
        foreach (var body in appBodies)
        {
            await api.SendAsync(conversation, body!);
        }
        await SynapseBridge.EventuallyAsync(async () => (await RoomAsync()).Count >= appCount / 4, "a quarter of the app's burst in the room");
        var inApp = (await HumanInAppAsync()).Count;
        var recoveries = bridge.Homeserver.AppserviceRecoveries();
        first.Process.Kill(entireProcessTree: true);
        await first.WaitForExitAsync(TimeSpan.FromSeconds(10));
        output.WriteLine($"killed with {(await RoomAsync()).Count}/{appCount} app messages in the room and {inApp} human ones in the app");

        await using var second = await bridge.StartProcessAsync();
        var restarted = Stopwatch.StartNew();
        api = ServiceProcess.Client(second.BaseAddress!, alice);
        await SynapseBridge.EventuallyAsync(
            () => Task.FromResult(bridge.Homeserver.AppserviceRecoveries() > recoveries),
            "Synapse's recovery after the restart", TimeSpan.FromSeconds(60));
        await Task.Delay(TimeSpan.FromSeconds(1));
        await humanDone.CancelAsync();
        await humanSends;
        output.WriteLine($"the human wrote {humanBodies.Count} messages, until {restarted.Elapsed.TotalSeconds:F1} s after the restart");
        List<string?> app = [];
        try
        {
            await SynapseBridge.EventuallyAsync(async () => (await RoomAsync()).Distinct().Count() >= appCount, "the app's whole burst in the room", TimeSpan.FromSeconds(60));
            output.WriteLine($"app burst in the room {restarted.Elapsed.TotalSeconds:F1} s after the restart");
            await SynapseBridge.EventuallyAsync(async () => (app = await HumanInAppAsync()).Distinct().Count() >= humanBodies.Count,
                "the human's whole burst in the app", TimeSpan.FromSeconds(60));
            output.WriteLine($"human burst in the app {restarted.Elapsed.TotalSeconds:F1} s after the restart");
        }
        catch (TimeoutException ex)
        {
            Assert.Fail($"{ex.Message} The app has {app.Count} of the human's {humanBodies.Count} messages, missing [{string.Join(", ", humanBodies.Except(app))}].\n"
                + $"--- Synapse:\n{string.Join('\n', bridge.Homeserver.AppservicePushLog().Where(l => !l.Contains("Retrying transaction", StringComparison.Ordinal)).TakeLast(30))}"
                + $"\n--- the restarted service:\n{string.Join('\n', second.Lines.TakeLast(30))}");
        }
        foreach (var refusal in first.Lines.Concat(second.Lines).Where(l => l.Contains("refused once", StringComparison.Ordinal)))
        {
            output.WriteLine($"gap: {refusal}");
        }

        Assert.Equal(appBodies, await RoomAsync());
        Assert.Equal(humanBodies, app);
        foreach (var message in await SynapseBridge.MessagesAsync(api, conversation))
        {
            await HappyPath.MatrixStateAsync(api, conversation, message.GetProperty("id").GetGuid(), "sent");
        }
    }

    [SynapseFact]
    public Task C_synapse_restarted_and_killed_while_humans_write_loses_and_reorders_nothing() => HumansThroughRestartsAsync("Appservice");

    [SynapseFact]
    public Task C_synapse_restarted_and_killed_while_humans_write_loses_and_reorders_nothing_in_client_mode() => HumansThroughRestartsAsync("Client");

    /// <summary>
    /// Synapse 1.67 drops, when it stops, what it had queued in memory for the appservice behind the push in flight
    /// (synapse#11637); with humans writing as fast as it answers, nearly every restart does (RoomTimelines).
    /// </summary>
    private async Task HumansThroughRestartsAsync(string mode)
    {
        const int writers = 4;
        await using var bridge = await SynapseBridge.StartAsync(mode);
        var alice = Guid.NewGuid();
        var (conversation, roomId, first) = await bridge.BridgedGroupAsync(alice, "Humans through restarts");
        List<MatrixHttpClient> humans = [first];
        for (var k = 1; k < writers; k++)
        {
            humans.Add(await bridge.HumanInRoomAsync(roomId));
        }
        using var done = new CancellationTokenSource();
        var sent = 0;
        var readBefore = await bridge.Server.Client().MetricAsync("matrix_room_timeline_events_total");
        var writing = humans.Select((human, k) => Task.Run(async () =>
        {
            for (var i = 1; !done.IsCancellationRequested; i++)
            {
                try
                {
                    await human.SendTextAsync(roomId, $"human {k + 1}/{i}");
                    Interlocked.Increment(ref sent);
                }
                catch (Exception) when (!bridge.Homeserver.Running || !done.IsCancellationRequested)
                {
                    // Synapse is down (or the send was cut by its stop): whatever reached the room is compared below.
                    await Task.Delay(200);
                }
            }
        })).ToList();

        var clock = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(2));
        await bridge.Homeserver.RestartAsync();
        output.WriteLine($"restarted Synapse ({sent} sent by {clock.Elapsed.TotalSeconds:F1} s)");
        await Task.Delay(TimeSpan.FromSeconds(2));
        await bridge.Homeserver.KillAsync();
        await bridge.Homeserver.StartAgainAsync();
        output.WriteLine($"killed and started Synapse ({sent} sent by {clock.Elapsed.TotalSeconds:F1} s)");
        await Task.Delay(TimeSpan.FromSeconds(2));
        await done.CancelAsync();
        await Task.WhenAll(writing);

        var room = (await first.MessagesAsync(roomId)).Select(e => e.Body).Where(b => b?.StartsWith("human ", StringComparison.Ordinal) == true).ToList();
        output.WriteLine($"{room.Count} human messages in the room ({sent} sends answered)");
        List<string?> app = [];
        try
        {
            await SynapseBridge.EventuallyAsync(async () =>
            {
                app = await bridge.HistoryAsync(alice, conversation);
                return app.Count >= room.Count;
            }, "every human message in the app", TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The app has {app.Count} of the room's {room.Count} human messages; missing [{string.Join(", ", room.Except(app))}].");
        }
        // Process-wide, so other tests running beside this one may add to it.
        output.WriteLine($"applied from the room's timeline before any push brought them (process-wide counter): {await bridge.Server.Client().MetricAsync("matrix_room_timeline_events_total") - readBefore}");
        Assert.Equal(room, app);
    }

    [SynapseFact]
    public Task D_a_malformed_relation_from_a_human_does_not_block_the_messages_after_it() => MalformedRelationAsync("Appservice");

    [SynapseFact]
    public Task D_a_malformed_relation_from_a_human_does_not_block_the_messages_after_it_in_client_mode() => MalformedRelationAsync("Client");

    private async Task MalformedRelationAsync(string mode)
    {
        await using var bridge = await SynapseBridge.StartAsync(mode);
        var alice = Guid.NewGuid();
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Poison");
        using var _ = human;
        await using var socket = await bridge.Server.ConnectAsync(alice);

        // Synapse 1.67 accepts this from any client (200).
        await human.SendAsync(roomId, "m.room.message", new JsonObject
        {
            ["msgtype"] = "m.text", ["body"] = "malformed relation",
            ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = "not-an-object" },
        });
        await human.SendTextAsync(roomId, "after the malformed one 1");
        await human.SendTextAsync(roomId, "after the malformed one 2");

        try
        {
            await socket.WaitForAsync(f => f.Type == "message.new" && f.Content() == "after the malformed one 2", LossWait);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The messages after a malformed event never arrived ({LossWait.TotalSeconds} s); the app has [{string.Join(", ", await bridge.HistoryAsync(alice, conversation))}].");
        }
        var history = await bridge.HistoryAsync(alice, conversation);
        Assert.Equal(["after the malformed one 1", "after the malformed one 2"], history.Where(c => c?.StartsWith("after", StringComparison.Ordinal) == true));
    }
}
