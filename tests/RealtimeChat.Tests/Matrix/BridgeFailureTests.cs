using System.Diagnostics;
using Dapper;
using MatrixEmulator;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>Homeserver outages, throttling, errors and our own crashes: nothing lost, duplicated or reordered.</summary>
public sealed class BridgeFailureTests
{
    [Fact]
    public async Task Burst_during_an_outage_is_delivered_afterwards_in_order_exactly_once()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");

        var expected = Enumerable.Range(0, 20).Select(i => $"burst {i}").ToList();
        var last = Guid.Empty;
        using (bridge.Homeserver.Faults.Inject(Fault.Down()))
        {
            var timer = Stopwatch.StartNew();
            foreach (var body in expected)
            {
                last = (await alice.SendAsync(conversation, body)).GetProperty("id").GetGuid();
            }
            // The chat does not wait for Matrix: 20 sends with the homeserver down take well under a second.
            Assert.True(timer.Elapsed < TimeSpan.FromSeconds(5), $"sends took {timer.Elapsed}");
            await Task.Delay(300);
            Assert.Empty(bridge.MessageBodies(roomId));
            Assert.Equal(20, await bridge.PendingActionsAsync());
            await BridgeHost.MatrixStateAsync(alice, conversation, last, "pending");
        }

        await Eventually.Async(() => bridge.MessageBodies(roomId).Count >= 20, "the backlog");
        await Task.Delay(200);
        Assert.Equal(expected, bridge.MessageBodies(roomId));
        Assert.Equal(0, await bridge.PendingActionsAsync());
        await BridgeHost.MatrixStateAsync(alice, conversation, last, "sent");
    }

    [Fact]
    public async Task Throttling_server_errors_and_timeouts_are_retried_without_duplicates()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new() { ["Matrix:RequestTimeout"] = "00:00:00.300" });
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");

        bridge.Homeserver.Faults.Inject(Fault.RateLimited(TimeSpan.FromMilliseconds(200)).On("PUT", "/send/").ForNext(2));
        bridge.Homeserver.Faults.Inject(Fault.ServerError(502).On("PUT", "/send/").ForNext(2));
        // Answers after our timeout but still stores the event: the retry must not post it twice.
        bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(600)).On("PUT", "/send/").ForNext(1));
        var expected = Enumerable.Range(0, 6).Select(i => $"flaky {i}").ToList();
        foreach (var body in expected)
        {
            await alice.SendAsync(conversation, body);
        }

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the outbox to drain");
        await Task.Delay(800);
        Assert.Equal(expected, bridge.MessageBodies(roomId));
        var sendAttempts = bridge.Homeserver.Requests.All.Count(r => r.Method == "PUT" && r.Path.Contains("/send/m.room.message/"));
        // 6 sends + 2 throttled + 2 failed (the timed-out attempt is abandoned by us before the emulator logs it).
        Assert.True(sendAttempts >= 10, $"expected retries, saw {sendAttempts} send requests");
        var metrics = await bridge.Server.Client().GetStringAsync("/metrics");
        Assert.Matches(@"matrix_errors_total\{error=""M_LIMIT_EXCEEDED""\} [1-9]", metrics);
        Assert.Matches(@"matrix_messages_sent_total [1-9]", metrics);
    }

    [Fact]
    public async Task A_crash_after_the_homeserver_accepted_but_before_we_recorded_it_does_not_post_twice()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");
        var expected = Enumerable.Range(0, 10).Select(i => $"once {i}").ToList();
        foreach (var body in expected)
        {
            await alice.SendAsync(conversation, body);
        }
        await Eventually.Async(() => bridge.MessageBodies(roomId).Count == 10, "first delivery");

        // Forget that they were sent, as a crash between the homeserver's answer and our update would.
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync("UPDATE matrix_outbox SET status = 'pending', matrix_event_id = NULL WHERE action = 'send_message'");
            await connection.ExecuteAsync("DELETE FROM matrix_events WHERE message_id IS NOT NULL");
        }
        await bridge.RestartAsync();

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the re-dispatch");
        Assert.Equal(expected, bridge.MessageBodies(roomId));
    }

    [Fact]
    public async Task Stopping_the_service_mid_dispatch_loses_and_duplicates_nothing()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");
        var slow = bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(40)).On("PUT", "/send/"));
        var expected = Enumerable.Range(0, 30).Select(i => $"restart {i}").ToList();
        foreach (var body in expected)
        {
            await alice.SendAsync(conversation, body);
        }
        await Eventually.Async(() => bridge.MessageBodies(roomId).Count >= 3, "dispatch under way");

        await bridge.RestartAsync();
        slow.Dispose();

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the rest after restart");
        await Task.Delay(200);
        Assert.Equal(expected, bridge.MessageBodies(roomId));
    }

    [Fact]
    public async Task An_action_the_homeserver_forbids_is_parked_and_the_room_moves_on()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");
        bridge.Homeserver.Faults.Inject(Fault.Forbidden("You are not allowed to send").On("PUT", "/send/").ForNext(1));

        var refused = await alice.SendAsync(conversation, "refused");
        await alice.SendAsync(conversation, "accepted");

        await Eventually.Async(() => bridge.MessageBodies(roomId).Contains("accepted"), "the next message");
        Assert.Equal(["accepted"], bridge.MessageBodies(roomId));
        var parked = await BridgeHost.MatrixStateAsync(alice, conversation, refused.GetProperty("id").GetGuid(), "failed");
        Assert.Contains("M_FORBIDDEN", parked.GetProperty("matrix").GetProperty("error").GetString());
        // The chat itself is untouched by what Matrix refused.
        var history = await alice.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(["refused", "accepted"], history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));
    }

    [Fact]
    public async Task A_slow_homeserver_does_not_slow_the_chat_and_readiness_stays_up()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, _, alice) = await bridge.BridgedConversationAsync("resilience");
        using var slow = bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromSeconds(3)));

        var timer = Stopwatch.StartNew();
        for (var i = 0; i < 10; i++)
        {
            await alice.SendAsync(conversation, $"fast {i}");
        }
        Assert.True(timer.Elapsed < TimeSpan.FromSeconds(2), $"10 sends took {timer.Elapsed} with a slow homeserver");

        using var down = bridge.Homeserver.Faults.Inject(Fault.Down());
        var ready = await bridge.Server.Client().GetAsync("/health/ready");
        Assert.Equal(System.Net.HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("Degraded", await ready.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_crash_between_creating_the_room_and_saving_the_mapping_does_not_make_a_second_room()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("resilience");

        // As if we died right after createRoom answered: the mapping was never saved and the action is still due.
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync("DELETE FROM matrix_room_mapping");
            await connection.ExecuteAsync("UPDATE matrix_outbox SET status = 'pending' WHERE action = 'create_room'");
        }
        await bridge.RestartAsync();
        await alice.SendAsync(conversation, "after the crash");

        await Eventually.Async(() => bridge.MessageBodies(roomId).Contains("after the crash"), "the message in the original room");
        Assert.Single(bridge.Homeserver.Rooms, r => r.Name == "resilience");
    }

    [Fact]
    public async Task A_room_held_back_by_the_homeserver_does_not_hold_back_other_rooms()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (stuck, stuckRoom, stuckSender) = await bridge.BridgedConversationAsync("resilience");
        var (free, freeRoom, freeSender) = await bridge.BridgedConversationAsync("resilience");
        using var throttled = bridge.Homeserver.Faults.Inject(Fault.RateLimited(TimeSpan.FromSeconds(30)).On("PUT", $"/rooms/{stuckRoom}/send/"));

        await stuckSender.SendAsync(stuck, "waits");
        await Eventually.Async(() => bridge.Homeserver.Requests.Count($"/rooms/{stuckRoom}/send/") >= 1, "the throttled attempt");
        await freeSender.SendAsync(free, "goes through");

        await Eventually.Async(() => bridge.MessageBodies(freeRoom).Contains("goes through"), "the other room's message");
        Assert.Empty(bridge.MessageBodies(stuckRoom));
    }
}
