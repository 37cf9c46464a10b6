using System.Net;
using Dapper;
using MatrixEmulator;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>
/// The dispatcher sends a room's text messages one after another but records them together: what that must not
/// change — nothing posted twice when recording fails or we crash first, relations to events not yet recorded,
/// back-off honoured whatever wakes the dispatcher.
/// </summary>
public sealed class DispatchBatchingTests
{
    private static int MessagePuts(BridgeHost bridge, string roomId) =>
        bridge.Homeserver.Requests.All.Count(r => r.Method == "PUT" && r.Path.Contains($"/rooms/{roomId}/send/m.room.message/", StringComparison.Ordinal));

    /// <summary>Makes every attempt to mark an action sent fail, as a crash right after the homeserver answered would.</summary>
    private static async Task RefuseRecordingAsync(ChatServer server, bool refuse)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        var postgres = server.Services.GetRequiredService<ChatDatabase>().Provider == DatabaseProvider.Postgres;
        string[] statements = (refuse, postgres) switch
        {
            (true, true) =>
            [
                "CREATE FUNCTION refuse_recording() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'recording refused'; END $$",
                "CREATE TRIGGER refuse_recording BEFORE UPDATE ON matrix_outbox FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_recording()",
            ],
            (true, false) =>
            [
                "CREATE TRIGGER refuse_recording BEFORE UPDATE ON matrix_outbox WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'recording refused'); END",
            ],
            (false, true) => ["DROP TRIGGER refuse_recording ON matrix_outbox", "DROP FUNCTION refuse_recording()"],
            (false, false) => ["DROP TRIGGER refuse_recording"],
        };
        foreach (var sql in statements)
        {
            await connection.ExecuteAsync(sql);
        }
    }

    /// <param name="slowSends">Each send takes longer than the portal waits before recording, so its outcomes are
    /// recorded while the next message is being sent, and that recording is what fails.</param>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Messages_the_homeserver_has_but_we_never_recorded_are_found_there_and_never_posted_twice(bool slowSends)
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("batching");
        await RefuseRecordingAsync(bridge.Server, refuse: true);
        using var slow = slowSends ? bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(250)).On("PUT", "/send/")) : null;

        var expected = Enumerable.Range(0, 12).Select(i => $"unrecorded {i}").ToList();
        var ids = new List<Guid>();
        foreach (var body in expected)
        {
            ids.Add((await alice.SendAsync(conversation, body)).GetProperty("id").GetGuid());
        }
        await Eventually.Async(() => bridge.MessageBodies(roomId).Count >= expected.Count, "the homeserver to have them all");
        // Recording keeps failing: the next drains look for them on the homeserver (a restarted homeserver has forgotten
        // their txnIds) and find them there instead of sending them again.
        await Eventually.Async(() => bridge.Homeserver.Requests.Count($"/rooms/{roomId}/messages", "GET") >= 2, "a look on the homeserver");
        Assert.Equal(expected.Count, MessagePuts(bridge, roomId));
        Assert.Equal(expected.Count, await bridge.PendingActionsAsync());

        // Stopping cannot record them either; the next start finds them once more and now records them.
        await bridge.RestartAsync();
        await RefuseRecordingAsync(bridge.Server, refuse: false);

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the outbox to drain");
        Assert.Equal(expected, bridge.MessageBodies(roomId));
        Assert.Equal(expected.Count, MessagePuts(bridge, roomId));
        var events = bridge.Homeserver.Timeline(roomId).Where(e => e.Type == "m.room.message").ToList();
        for (var i = 0; i < ids.Count; i++)
        {
            var message = await BridgeHost.MatrixStateAsync(alice, conversation, ids[i], "sent");
            Assert.Equal(events[i].EventId, message.GetProperty("matrix").GetProperty("event_id").GetString());
        }
    }

    [Fact]
    public async Task A_backlog_of_messages_replies_edits_and_reactions_keeps_every_relation()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("batching");

        Guid first;
        using (bridge.Homeserver.Faults.Inject(Fault.Down()))
        {
            first = (await alice.SendAsync(conversation, "first")).GetProperty("id").GetGuid();
            await (await alice.PostJsonAsync($"/api/v1/conversations/{conversation}/messages", new { content = "a reply", reply_to = first }))
                .JsonAsync(HttpStatusCode.Created);
            await alice.SendAsync(conversation, "after the reply");
            await alice.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{first}", new { content = "first, edited" });
            await alice.PutAsync($"/api/v1/conversations/{conversation}/messages/{first}/reactions/{Uri.EscapeDataString("🎉")}", null);
            await alice.SendAsync(conversation, "last");
            await Task.Delay(200);
        }

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the backlog");
        var timeline = bridge.Homeserver.Timeline(roomId).Where(e => e.Type is "m.room.message" or "m.reaction").ToList();
        var original = timeline.Single(e => (string?)e.OriginalContent["body"] == "first, edited");
        var reply = timeline.Single(e => BridgeHost.WithoutReplyFallback(e.Body) == "a reply");
        Assert.Equal(original.EventId, (string?)reply.Content["m.relates_to"]!["m.in_reply_to"]!["event_id"]);
        var edit = timeline.Single(e => (string?)e.Content["m.relates_to"]?["rel_type"] == "m.replace");
        Assert.Equal(original.EventId, (string?)edit.Content["m.relates_to"]!["event_id"]);
        var reaction = timeline.Single(e => e.Type == "m.reaction");
        Assert.Equal(original.EventId, (string?)reaction.Content["m.relates_to"]!["event_id"]);
        Assert.Equal(
            ["first, edited", "a reply", "after the reply", "* first, edited", "m.reaction", "last"],
            timeline.Select(e => e.Type == "m.reaction" ? "m.reaction" : BridgeHost.WithoutReplyFallback((string?)e.OriginalContent["body"])));
        var delivered = await BridgeHost.MatrixStateAsync(alice, conversation, first, "sent");
        Assert.Equal(original.EventId, delivered.GetProperty("matrix").GetProperty("event_id").GetString());
    }

    [Fact]
    public async Task New_messages_in_a_room_that_is_backing_off_do_not_bring_its_retry_forward()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new() { ["Matrix:MaxRetryDelay"] = "00:00:02" });
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("batching");
        bridge.Homeserver.Faults.Inject(Fault.RateLimited(TimeSpan.FromSeconds(1.5)).On("PUT", "/send/").ForNext(1));

        await alice.SendAsync(conversation, "throttled 0");
        await Eventually.Async(() => MessagePuts(bridge, roomId) == 1, "the throttled attempt");
        var expected = Enumerable.Range(0, 6).Select(i => $"throttled {i}").ToList();
        foreach (var body in expected.Skip(1))
        {
            await alice.SendAsync(conversation, body);
        }
        await Task.Delay(600);
        Assert.Equal(1, MessagePuts(bridge, roomId));

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the retry");
        Assert.Equal(expected, bridge.MessageBodies(roomId));
    }
}
