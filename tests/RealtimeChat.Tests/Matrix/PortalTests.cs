using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Dapper;
using MatrixEmulator;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>
/// A portal owns its room's outbound order and fate: exactly once across homeserver restarts, every room back within
/// moments of the homeserver answering again, every failure classified, rooms made late for conversations that
/// predate the bridge, one sender per room when several instances share the database.
/// </summary>
public sealed class PortalTests
{
    private static int MessagePuts(BridgeHost bridge, string roomId) =>
        bridge.Homeserver.Requests.All.Count(r => r.Method == "PUT" && r.Path.Contains($"/rooms/{roomId}/send/m.room.message/", StringComparison.Ordinal));

    private static async Task<T> ScalarAsync<T>(ChatServer server, string sql, object? parameters = null)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return (await connection.ExecuteScalarAsync<T>(sql, parameters))!;
    }

    [Fact]
    public async Task A_send_whose_answer_was_lost_is_not_posted_again_even_after_the_homeserver_forgot_its_txn_ids()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("exactly once");

        using (bridge.Homeserver.Faults.Inject(Fault.AnswerLost().On("PUT", "/send/m.room.message/").ForNext(1)))
        {
            await alice.SendAsync(conversation, "stored, answer lost");
            await Eventually.Async(() => bridge.MessageBodies(roomId).Count == 1, "the homeserver to store it");
            // The homeserver restarts before our retry: it no longer knows the txnId, so a plain resend would post twice.
            await bridge.Homeserver.RestartAsync(TimeSpan.FromMilliseconds(50), kill: true);
        }
        await alice.SendAsync(conversation, "next");

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the outbox to drain");
        Assert.Equal(["stored, answer lost", "next"], bridge.MessageBodies(roomId));
        Assert.Equal(2, MessagePuts(bridge, roomId));
    }

    [Fact]
    public async Task Conversations_created_at_once_with_the_same_new_members_all_get_their_rooms()
    {
        await using var bridge = await BridgeHost.StartAsync();
        // Each portal registers its members' ghosts. Held at the homeserver, the registrations of one user by several
        // portals end together, so the portals record that ghost at the same moment (what a late enable of many
        // conversations does, or a burst of new groups with the same people).
        using var slow = bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(300)).On("POST", "/register"));
        var members = Enumerable.Range(0, 6).Select(_ => Guid.NewGuid()).ToArray();
        var owners = Enumerable.Range(0, 8).Select(_ => Guid.NewGuid()).ToArray();
        var conversations = await Task.WhenAll(owners.Select((owner, i) => bridge.Server.Client(owner).CreateGroupAsync($"shared {i}", members)));
        for (var i = 0; i < conversations.Length; i++)
        {
            await bridge.Server.Client(members[0]).SendAsync(conversations[i], $"hello {i}");
        }

        for (var i = 0; i < conversations.Length; i++)
        {
            var roomId = await Eventually.Async(() => bridge.RoomOf(conversations[i]), $"room {i}");
            await Eventually.Async(() => bridge.MessageBodies(roomId).Contains($"hello {i}"), $"message {i}");
        }
        Assert.Equal(0, await ScalarAsync<long>(bridge.Server, "SELECT COUNT(*) FROM matrix_outbox WHERE status = 'failed'"));
    }

    [Fact]
    public async Task A_burst_across_homeserver_restarts_reaches_the_room_once_each_in_order()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("restarts");

        var expected = Enumerable.Range(0, 60).Select(i => $"restart burst {i}").ToList();
        var sending = Task.Run(async () =>
        {
            foreach (var body in expected)
            {
                await alice.SendAsync(conversation, body);
                await Task.Delay(5);
            }
        });
        for (var i = 0; i < 3; i++)
        {
            await Task.Delay(80);
            await bridge.Homeserver.RestartAsync(TimeSpan.FromMilliseconds(100), kill: i % 2 == 0);
        }
        await sending;

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the outbox to drain", TimeSpan.FromSeconds(30));
        Assert.Equal(expected, bridge.MessageBodies(roomId));
    }

    [Fact]
    public async Task Every_room_resumes_within_moments_of_the_homeserver_answering_again_whatever_its_back_off()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new()
        {
            // A room left to its own back-off would wait up to a minute after a long outage.
            ["Matrix:MinRetryDelay"] = "00:00:05",
            ["Matrix:MaxRetryDelay"] = "00:01:00",
            ["Matrix:HealthProbeInterval"] = "00:00:00.500",
        });
        var rooms = new List<(Guid Conversation, string RoomId, HttpClient Owner)>();
        for (var i = 0; i < 3; i++)
        {
            rooms.Add(await bridge.BridgedConversationAsync($"outage {i}"));
        }

        await bridge.Homeserver.ShutDownAsync();
        foreach (var (conversation, _, owner) in rooms)
        {
            await owner.SendAsync(conversation, "during the outage");
        }
        // Long enough for each room's own back-off to reach 10 s (5 s, then 10 s).
        await Task.Delay(6000);
        await bridge.Homeserver.StartAgainAsync();
        var back = Stopwatch.StartNew();

        await Eventually.Async(() => rooms.All(r => bridge.MessageBodies(r.RoomId).Contains("during the outage")), "every room", TimeSpan.FromSeconds(20));
        Assert.True(back.Elapsed < TimeSpan.FromSeconds(4), $"the rooms came back {back.Elapsed} after the homeserver");
    }

    [Fact]
    public async Task Unknown_failures_are_retried_then_parked_and_the_room_moves_on_and_matrix_retry_sends_them_again()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new() { ["Matrix:MaxAttempts"] = "3" });
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("classes");

        Guid stuck;
        using (bridge.Homeserver.Faults.Inject(Fault.ServerError(500).On("PUT", "/send/m.room.message/").ForNext(3)))
        {
            stuck = (await alice.SendAsync(conversation, "unlucky")).GetProperty("id").GetGuid();
            var parked = await BridgeHost.MatrixStateAsync(alice, conversation, stuck, "failed");
            Assert.Contains("Gave up after 3 attempts", parked.GetProperty("matrix").GetProperty("error").GetString());
        }
        await alice.SendAsync(conversation, "after it");
        await Eventually.Async(() => bridge.MessageBodies(roomId).Contains("after it"), "the room moving on");

        // An unknown action (a newer version's, say) can never be sent by this one: parked at once, the room moves on.
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync(
                """
                INSERT INTO matrix_outbox (conversation_id, seq, action, payload, txn_id, status, attempts, next_attempt_at, created_at)
                VALUES (@conversation, 100000, 'teleport', '{}', 'bogus-1', 'pending', 0, @now, @now)
                """,
                new { conversation, now = DateTimeOffset.UtcNow });
        }
        await Eventually.Async(async () => await ScalarAsync<string>(bridge.Server, "SELECT status FROM matrix_outbox WHERE txn_id = 'bogus-1'") == "failed", "the unknown action parked");
        Assert.Equal(1, await ScalarAsync<int>(bridge.Server, "SELECT attempts FROM matrix_outbox WHERE txn_id = 'bogus-1'"));

        var (exitCode, output, error) = await Commands.RunAsync(["matrix", "retry", "--conversation", conversation.ToString(), .. bridge.Server.CommandLineSettings()]);
        Assert.True(exitCode == 0, error);
        Assert.Contains("2 parked Matrix action(s) queued again", output);
        await BridgeHost.MatrixStateAsync(alice, conversation, stuck, "sent");
        Assert.Equal(["after it", "unlucky"], bridge.MessageBodies(roomId).Skip(0).ToList());
    }

    [Fact]
    public async Task When_its_room_cannot_be_created_a_conversations_actions_are_parked_with_that_reason()
    {
        await using var bridge = await BridgeHost.StartAsync();
        Guid conversation;
        HttpClient alice;
        using (bridge.Homeserver.Faults.Inject(Fault.Forbidden("You are not allowed to create rooms").On("POST", "/createRoom")))
        {
            alice = bridge.Server.Client(Guid.NewGuid());
            conversation = await alice.CreateGroupAsync("no room");
            var message = (await alice.SendAsync(conversation, "nowhere to go")).GetProperty("id").GetGuid();
            var parked = await BridgeHost.MatrixStateAsync(alice, conversation, message, "failed");
            Assert.Contains("room could not be created", parked.GetProperty("matrix").GetProperty("error").GetString());
        }
        Assert.Null(bridge.RoomOf(conversation));

        var (exitCode, _, error) = await Commands.RunAsync(["matrix", "retry", .. bridge.Server.CommandLineSettings()]);
        Assert.True(exitCode == 0, error);
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room, on retry");
        await Eventually.Async(() => bridge.MessageBodies(roomId).Contains("nowhere to go"), "the message, on retry");
    }

    [Fact]
    public async Task A_conversation_from_before_matrix_was_enabled_gets_its_room_and_latest_history_with_original_times()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new() { ["Matrix:Enabled"] = "false", ["Matrix:BackfillLimit"] = "3" });
        var alice = bridge.Server.Client(Guid.NewGuid());
        var bob = Guid.NewGuid();
        var conversation = await alice.CreateGroupAsync("from before", bob);
        var old = new List<System.Text.Json.JsonElement>();
        foreach (var body in new[] { "too old", "old 1", "old 2", "old 3" })
        {
            old.Add(await alice.SendAsync(conversation, body));
            await Task.Delay(30);
        }
        var deleted = old[2].GetProperty("id").GetGuid();
        await alice.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{deleted}");

        await bridge.RestartAsync(new() { ["Matrix:Enabled"] = "true" });
        alice = bridge.Server.Client(old[0].GetProperty("sender_id").GetGuid());
        await alice.SendAsync(conversation, "new");

        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the late room");
        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the backfill");
        // The three latest messages still there, in order, then the new one; the room has both members.
        Assert.Equal(["too old", "old 1", "old 3", "new"], bridge.MessageBodies(roomId));
        await Eventually.Async(() => bridge.Homeserver.Members(roomId).Contains(bridge.Ghost(bob)), "bob in the room");
        var first = bridge.Homeserver.Timeline(roomId).First(e => e.Body == "too old");
        var sentAt = old[0].GetProperty("created_at").GetDateTimeOffset();
        Assert.Equal(sentAt.ToUnixTimeMilliseconds(), bridge.Homeserver.OriginServerTs(first.EventId));
    }

    [Fact]
    public async Task Two_instances_on_one_database_send_each_room_in_order_through_one_of_them()
    {
        await using var bridge = await BridgeHost.StartAsync();
        // A second instance of the service on the same database (a rolling restart), with its own port.
        var second = await ChatServer.StartAsync(
            new Dictionary<string, string?>(bridge.Server.Settings) { ["urls"] = "http://127.0.0.1:0" }, reuse: bridge.Server);
        await using var _ = second;
        // Joins take a while, as on a busy homeserver: the room exists before its members are in it.
        using var slowJoins = bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(300)).On("POST", "/join"));
        var owner = Guid.NewGuid();
        var alice = bridge.Server.Client(owner);
        var conversation = await alice.CreateGroupAsync("two instances", Guid.NewGuid(), Guid.NewGuid());
        var aliceOnSecond = second.Client(owner);

        var expected = Enumerable.Range(0, 40).Select(i => $"alternating {i}").ToList();
        for (var i = 0; i < expected.Count; i++)
        {
            await (i % 2 == 0 ? alice : aliceOnSecond).SendAsync(conversation, expected[i]);
        }

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "both outboxes", TimeSpan.FromSeconds(40));
        Assert.Equal(expected, bridge.MessageBodies(bridge.RoomOf(conversation)!));
        // One sender per room: no action was sent by both instances (the homeserver would hide it, until it restarts).
        Assert.Equal(expected.Count, MessagePuts(bridge, bridge.RoomOf(conversation)!));
        Assert.Equal(0, await ScalarAsync<int>(bridge.Server, "SELECT COUNT(*) FROM matrix_outbox WHERE status = 'failed'"));
    }

    [Fact]
    public async Task A_portal_whose_lease_moved_while_it_sent_records_nothing_and_the_next_holder_finds_the_event()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("lease moves");
        Guid messageId;
        using (bridge.Homeserver.Faults.Inject(Fault.Slow(TimeSpan.FromSeconds(1)).On("PUT", "/send/m.room.message/").ForNext(1)))
        {
            messageId = (await alice.SendAsync(conversation, "sent as the lease moved")).GetProperty("id").GetGuid();
            // Another instance takes the portal over while the answer is on its way (as after a pause longer than the
            // lease). The portal renewed its lease moments ago (the room's set-up), so it sends without asking the
            // database, whether or not it has begun already.
            await using var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
            Assert.Equal(1, await connection.ExecuteAsync(
                "UPDATE matrix_portal_leases SET owner = 'another instance', token = token + 1, expires_at = @until WHERE conversation_id = @conversation",
                new { conversation, until = DateTimeOffset.UtcNow.AddSeconds(4) }));
            await Eventually.Async(() => bridge.MessageBodies(roomId).Count == 1, "the homeserver to store it");
        }

        // The answer came under a lease this process no longer holds: the outcome is not its to record.
        await Task.Delay(TimeSpan.FromSeconds(1));
        var waiting = await alice.GetJsonAsync($"/api/v1/conversations/{conversation}/messages/{messageId}");
        Assert.Equal("pending", waiting.GetProperty("matrix").GetProperty("state").GetString());

        // When the other's lease runs out, this process takes the portal back and finds the event rather than posting it again.
        await BridgeHost.MatrixStateAsync(alice, conversation, messageId, "sent");
        Assert.Equal(["sent as the lease moved"], bridge.MessageBodies(roomId));
        Assert.Equal(1, MessagePuts(bridge, roomId));
    }

    [Fact]
    public async Task Read_markers_reach_matrix_as_the_readers_ghost()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("receipts");
        var owner = await ScalarAsync<Guid>(bridge.Server, "SELECT created_by FROM conversations WHERE id = @conversation", new { conversation });
        var bob = (await alice.GetJsonAsync($"/api/v1/conversations/{conversation}/members")).EnumerateArray()
            .Select(m => m.GetProperty("user_id").GetGuid()).Single(id => id != owner);
        var message = await alice.SendAsync(conversation, "read me");
        var eventId = (await BridgeHost.MatrixStateAsync(alice, conversation, message.GetProperty("id").GetGuid(), "sent"))
            .GetProperty("matrix").GetProperty("event_id").GetString();

        var read = await bridge.Server.Client(bob).PutJsonAsync($"/api/v1/conversations/{conversation}/read", new { seq = message.GetProperty("seq").GetInt64() });
        Assert.True(read.IsSuccessStatusCode);

        await Eventually.Async(() => bridge.Homeserver.Requests.All.Any(r => r.Method == "POST"
            && r.Path.Contains($"/rooms/{roomId}/receipt/m.read/{eventId}", StringComparison.Ordinal)
            && r.Query.Contains(Uri.EscapeDataString(bridge.Ghost(bob)), StringComparison.Ordinal) && r.Status == 200), "bob's ghost's receipt");
    }

    [Fact]
    public async Task An_app_users_typing_shows_in_the_room_as_their_ghost_and_matrix_typing_does_not_come_back()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, owner, member) = await TypingRoomAsync(bridge, "typing");

        await TypingShowsAsTheGhostOnceAsync(bridge, conversation, roomId, owner, member);
    }

    [Fact]
    public async Task After_a_restart_typing_reaches_the_room_before_the_user_sends_anything()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, owner, member) = await TypingRoomAsync(bridge, "typing after restart");

        await bridge.RestartAsync();

        await TypingShowsAsTheGhostOnceAsync(bridge, conversation, roomId, owner, member);
    }

    // A bridged two-member conversation whose owner has sent a message (so their ghost is in the room).
    private static async Task<(Guid Conversation, string RoomId, Guid Owner, Guid Member)> TypingRoomAsync(BridgeHost bridge, string name)
    {
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync(name);
        var owner = await ScalarAsync<Guid>(bridge.Server, "SELECT created_by FROM conversations WHERE id = @conversation", new { conversation });
        var member = (await alice.GetJsonAsync($"/api/v1/conversations/{conversation}/members")).EnumerateArray()
            .Select(m => m.GetProperty("user_id").GetGuid()).Single(id => id != owner);
        await BridgeHost.MatrixStateAsync(alice, conversation, (await alice.SendAsync(conversation, "hi")).GetProperty("id").GetGuid(), "sent");
        return (conversation, roomId, owner, member);
    }

    // The typist types on a WebSocket: the room shows their ghost typing, the other member sees it once, and the
    // homeserver's typing notice naming that ghost, pushed back to the bridge, is not shown again.
    private static async Task TypingShowsAsTheGhostOnceAsync(BridgeHost bridge, Guid conversation, string roomId, Guid typist, Guid watcher)
    {
        await using var typing = await bridge.Server.ConnectAsync(typist);
        await using var watching = await bridge.Server.ConnectAsync(watcher);
        await typing.SendAsync(new { type = "typing", conversation_id = conversation });

        await Eventually.Async(() => bridge.Homeserver.Requests.All.Any(r => r.Method == "PUT"
            && r.Path.Contains($"/rooms/{roomId}/typing/{bridge.Ghost(typist)}", StringComparison.Ordinal) && r.Status == 200), "the ghost typing");
        await watching.WaitForAsync(f => f.Type == "typing");

        await using var transactions = new TransactionClient(bridge);
        var echo = await transactions.PutAsync($"typing-echo-{Guid.NewGuid():N}", new JsonObject
        {
            ["events"] = new JsonArray(),
            ["ephemeral"] = new JsonArray(new JsonObject
            {
                ["type"] = "m.typing", ["room_id"] = roomId, ["content"] = new JsonObject { ["user_ids"] = new JsonArray(bridge.Ghost(typist)) },
            }),
        });
        Assert.Equal(HttpStatusCode.OK, echo.StatusCode);
        Assert.DoesNotContain(await watching.CollectAsync(TimeSpan.FromSeconds(1)), f => f.Type == "typing");
    }

    [Fact]
    public async Task A_room_whose_mapping_was_lost_is_found_again_by_its_alias_not_made_twice()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, roomId, alice) = await bridge.BridgedConversationAsync("lost mapping");
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync("DELETE FROM matrix_room_mapping WHERE conversation_id = @conversation", new { conversation });
        }
        // A new process: nothing of the room is cached.
        await bridge.RestartAsync();
        alice = bridge.Server.Client(await ScalarAsync<Guid>(bridge.Server, "SELECT created_by FROM conversations WHERE id = @conversation", new { conversation }));

        await alice.SendAsync(conversation, "after the loss");

        await Eventually.Async(() => bridge.MessageBodies(roomId).Contains("after the loss"), "the message in the same room", TimeSpan.FromSeconds(20));
        Assert.Single(bridge.Homeserver.Rooms, r => r.Name == "lost mapping");
    }

    /// <summary>
    /// Rows wait in the outbox across deploys, so the payload of each action keeps its shape: a change to the chat's
    /// event records that alters one must come with a new <c>payload_version</c> and a reader for the old one.
    /// </summary>
    [Fact]
    public async Task Outbox_payloads_keep_their_version_1_shape()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (conversation, _, alice) = await bridge.BridgedConversationAsync("payloads");
        var owner = await ScalarAsync<Guid>(bridge.Server, "SELECT created_by FROM conversations WHERE id = @conversation", new { conversation });
        var newcomer = Guid.NewGuid();
        await (await alice.PostJsonAsync($"/api/v1/conversations/{conversation}/members", new { user_id = newcomer })).JsonAsync(HttpStatusCode.Created);
        await alice.PatchJsonAsync($"/api/v1/conversations/{conversation}", new { name = "payloads, renamed" });
        var message = await alice.SendAsync(conversation, "shape");
        var messageId = message.GetProperty("id").GetGuid();
        await alice.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{messageId}", new { content = "shape, edited" });
        await alice.PutAsync($"/api/v1/conversations/{conversation}/messages/{messageId}/reactions/{Uri.EscapeDataString("👍")}", null);
        await alice.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{messageId}/reactions/{Uri.EscapeDataString("👍")}");
        await alice.PutJsonAsync($"/api/v1/conversations/{conversation}/read", new { seq = message.GetProperty("seq").GetInt64() });
        await alice.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{messageId}");
        await alice.DeleteAsync($"/api/v1/conversations/{conversation}/members/{newcomer}");
        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the outbox to drain");

        await using var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        var rows = (await connection.QueryAsync<(string Action, string Payload, long Version)>(
            "SELECT action, payload, payload_version FROM matrix_outbox WHERE conversation_id = @conversation ORDER BY seq", new { conversation })).ToList();
        Assert.All(rows, r => Assert.Equal(1, r.Version));
        static string Shape(System.Text.Json.JsonElement element) => element.ValueKind switch
        {
            System.Text.Json.JsonValueKind.Object => "{" + string.Join(",", element.EnumerateObject().Select(p => p.Name + ":" + Shape(p.Value))) + "}",
            System.Text.Json.JsonValueKind.Array => "[" + (element.GetArrayLength() > 0 ? Shape(element[0]) : "") + "]",
            var kind => kind.ToString().ToLowerInvariant(),
        };
        var shapes = rows.GroupBy(r => r.Action).ToDictionary(g => g.Key, g => Shape(System.Text.Json.JsonDocument.Parse(g.First().Payload).RootElement));
        // The bridge's own records (Matrix/OutboxPayloads.cs), a subset of what version 1 rows held: the chat's events.
        Assert.Equal("{id:string,kind:string,name:string,created_by:string,members:[{user_id:string}]}", shapes["create_room"]);
        Assert.Equal("{member:{user_id:string}}", shapes["invite"]);
        Assert.Equal("{name:string}", shapes["rename"]);
        Assert.Equal("{message_id:string}", shapes["send_message"]);
        Assert.Equal("{message_id:string}", shapes["edit"]);
        Assert.Equal("{message_id:string,user_id:string,reaction:string}", shapes["react"]);
        Assert.Equal("{message_id:string,user_id:string,reaction:string}", shapes["unreact"]);
        Assert.Equal("{user_id:string,last_read_seq:number}", shapes["read_receipt"]);
        Assert.Equal("{message_id:string,deleted_by:string}", shapes["redact"]);
        Assert.Equal("{user_id:string,removed_by:string,left:false}", shapes["remove_member"]);
        Assert.Equal(owner, Guid.Parse(System.Text.Json.JsonDocument.Parse(rows.First(r => r.Action == "create_room").Payload).RootElement.GetProperty("created_by").GetString()!));
    }

    [Fact]
    public async Task Rows_that_the_previous_version_wrote_with_the_chats_event_records_are_still_sent()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var down = bridge.Homeserver.Faults.Inject(Fault.Down());
        var alice = Guid.NewGuid();
        var newcomer = Guid.NewGuid();
        var app = bridge.Server.Client(alice);
        var conversation = await app.CreateGroupAsync("before the upgrade", Guid.NewGuid());
        await (await app.PostJsonAsync($"/api/v1/conversations/{conversation}/members", new { user_id = newcomer })).JsonAsync(HttpStatusCode.Created);
        await app.PatchJsonAsync($"/api/v1/conversations/{conversation}", new { name = "renamed before the upgrade" });
        var messageId = (await app.SendAsync(conversation, "written")).GetProperty("id").GetGuid();
        await app.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{messageId}", new { content = "written, edited" });
        await app.PutAsync($"/api/v1/conversations/{conversation}/messages/{messageId}/reactions/{Uri.EscapeDataString("👍")}", null);

        // What the previous version stored in each row: the chat's event record, exactly as the event log keeps it.
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            var rewritten = await connection.ExecuteAsync(
                """
                UPDATE matrix_outbox SET payload = (SELECT e.payload FROM conversation_events e
                                                     WHERE e.conversation_id = matrix_outbox.conversation_id AND e.seq = matrix_outbox.seq)
                 WHERE conversation_id = @conversation AND status = 'pending'
                """,
                new { conversation });
            Assert.Equal(6, rewritten);
        }
        down.Dispose();

        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the old rows to be sent");
        var roomId = bridge.RoomOf(conversation)!;
        Assert.Equal("renamed before the upgrade", bridge.Homeserver.Rooms.Single(r => r.RoomId == roomId).Name);
        Assert.Contains(bridge.Ghost(newcomer), bridge.Homeserver.Members(roomId));
        // A message is sent as it is when its action runs: already edited.
        Assert.Equal(["written, edited", "* written, edited"], bridge.MessageBodies(roomId));
        Assert.Single(bridge.Homeserver.Timeline(roomId), e => e.Type == "m.reaction" && e.Sender == bridge.Ghost(alice));
        await using var check = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        Assert.Equal(0, await check.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM matrix_outbox WHERE status = 'failed'"));
    }
}
