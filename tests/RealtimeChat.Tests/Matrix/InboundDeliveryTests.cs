using System.Net;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;
using static RealtimeChat.Tests.Matrix.TransactionClient;

namespace RealtimeChat.Tests.Matrix;

/// <summary>
/// How the homeserver really delivers (Synapse 1.67): transaction ids restart from 1 after a restart, a push whose
/// answer was late is sent again while the first is still being handled, and events come in any JSON shape.
/// </summary>
public sealed class InboundDeliveryTests
{
    private static async Task<(BridgeHost Bridge, Guid Conversation, string RoomId, Guid Alice, HttpClient Client, TransactionClient Transactions)> SetUpAsync(bool direct = false)
    {
        var bridge = await BridgeHost.StartAsync();
        var alice = Guid.NewGuid();
        var client = bridge.Server.Client(alice);
        Guid conversation;
        if (direct)
        {
            var created = await client.PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { Guid.NewGuid() } });
            conversation = (await created.JsonAsync(HttpStatusCode.Created)).GetProperty("id").GetGuid();
        }
        else
        {
            conversation = await client.CreateGroupAsync("Delivery");
        }
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the room set-up");
        return (bridge, conversation, roomId, alice, client, new TransactionClient(bridge));
    }

    private static async Task<List<string?>> ContentsAsync(HttpClient client, Guid conversation)
    {
        var history = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages?limit=100");
        return history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()).ToList();
    }

    [Fact]
    public async Task A_transaction_id_used_again_after_a_homeserver_restart_still_delivers_its_new_events()
    {
        var (bridge, conversation, roomId, alice, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        await using var socket = await bridge.Server.ConnectAsync(alice);

        Assert.Equal(HttpStatusCode.OK, (await transactions.PutAsync("1", Transaction(Text("$before", roomId, "@human:localhost", "before the restart")))).StatusCode);
        // The restarted homeserver numbers its transactions from 1 again.
        Assert.Equal(HttpStatusCode.OK, (await transactions.PutAsync("1", Transaction(Text("$after", roomId, "@human:localhost", "after the restart")))).StatusCode);

        await socket.WaitForAsync(f => f.Type == "message.new" && f.Data.GetProperty("content").GetString() == "after the restart");
        Assert.Equal(["before the restart", "after the restart"], await ContentsAsync(client, conversation));
    }

    [Fact]
    public async Task A_transaction_sent_again_while_its_first_attempt_runs_stores_each_event_once_in_order()
    {
        var (bridge, conversation, roomId, _, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        var events = Enumerable.Range(1, 60).Select(i => Text($"$burst-{i}", roomId, "@human:localhost", $"burst {i}")).ToArray();

        // The homeserver timed out the first push and sent it again; a restart of either side sends it under a new id.
        // (Ids that are not numbers: these four may reach the service in any order, which Synapse's numbered ones do
        // not, and the gap check of numbered ids is not what this test is about.)
        var pushes = await Task.WhenAll(
            transactions.PutAsync("t-7", Transaction([.. events.Select(e => (JsonObject)e.DeepClone())])),
            transactions.PutAsync("t-7", Transaction([.. events.Select(e => (JsonObject)e.DeepClone())])),
            transactions.PutAsync("t-7", Transaction([.. events.Select(e => (JsonObject)e.DeepClone())])),
            transactions.PutAsync("t-1", Transaction([.. events.Select(e => (JsonObject)e.DeepClone())])));

        Assert.All(pushes, p => Assert.Equal(HttpStatusCode.OK, p.StatusCode));
        Assert.Equal(Enumerable.Range(1, 60).Select(i => $"burst {i}"), await ContentsAsync(client, conversation));
    }

    [Fact]
    public async Task A_gap_in_transaction_ids_is_refused_once_and_a_gap_that_stays_open_pauses_the_checks()
    {
        var (bridge, conversation, roomId, _, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        await bridge.Homeserver.Appservice.WaitUntilIdleAsync(TimeSpan.FromSeconds(10));
        var next = bridge.Homeserver.Appservice.PushedTxnIds.Max() + 1;
        // One counter per test process, which other tests may move too: this test's own pushes must add to them.
        const string refusedSeries = "matrix_appservice_transactions_total{outcome=\"gap_refused\"}", unfilledSeries = "matrix_errors_total{error=\"txn_gap_unfilled\"}";
        var (refusedBefore, unfilledBefore) = (await client.MetricAsync(refusedSeries), await client.MetricAsync(unfilledSeries));
        Task<HttpResponseMessage> PushAsync(long id, string body) => transactions.PutAsync($"{id}", Transaction(Text($"$gap-{id}-{body}", roomId, "@human:localhost", body)));

        Assert.Equal(HttpStatusCode.OK, (await PushAsync(next, "in sequence")).StatusCode);
        // Two ids skipped: the push is refused untouched, so that the homeserver sends its oldest unsent one first.
        var refused = await PushAsync(next + 3, "after a gap");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("M_UNKNOWN", (await refused.JsonAsync(HttpStatusCode.ServiceUnavailable)).GetProperty("errcode").GetString());
        Assert.Equal(["in sequence"], await ContentsAsync(client, conversation));
        // It comes back with the gap still open (another appservice's transactions): it is taken, and gaps are let by.
        Assert.Equal(HttpStatusCode.OK, (await PushAsync(next + 3, "after a gap")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await PushAsync(next + 9, "after another gap")).StatusCode);
        // A restarted homeserver numbers from 1 again.
        Assert.Equal(HttpStatusCode.OK, (await PushAsync(1, "after a restart")).StatusCode);

        Assert.Equal(["in sequence", "after a gap", "after another gap", "after a restart"], await ContentsAsync(client, conversation));
        Assert.True(await client.MetricAsync(refusedSeries) >= refusedBefore + 1, "the refusal is counted");
        Assert.True(await client.MetricAsync(unfilledSeries) >= unfilledBefore + 1, "the gap that stayed open is counted");
    }

    [Fact]
    public async Task An_event_that_cannot_be_understood_is_skipped_and_counted_and_the_rest_of_the_transaction_applies()
    {
        var (bridge, conversation, roomId, _, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        JsonObject Raw(string eventId, string type, JsonNode content, JsonObject? top = null)
        {
            var evt = new JsonObject { ["type"] = type, ["room_id"] = roomId, ["sender"] = "@odd:localhost", ["event_id"] = eventId, ["content"] = content };
            foreach (var (key, value) in top ?? [])
            {
                evt[key] = value?.DeepClone();
            }
            return evt;
        }

        var badSeries = "matrix_inbound_events_total{outcome=\"bad_event\"}";
        var badBefore = await client.MetricAsync(badSeries);
        var response = await transactions.PutAsync("poison", Transaction(
            Text("$good-1", roomId, "@human:localhost", "first"),
            // What Synapse 1.67 accepts from a client (200); its own /messages then fails on it.
            Raw("$edit-string", "m.room.message", new JsonObject
            {
                ["msgtype"] = "m.text", ["body"] = "* replaced by the fallback", ["m.new_content"] = "str",
                ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.replace", ["event_id"] = "$good-1" },
            }),
            Raw("$body-number", "m.room.message", new JsonObject { ["msgtype"] = "m.text", ["body"] = 42 }),
            Raw("$msgtype-array", "m.room.message", new JsonObject { ["msgtype"] = new JsonArray(1), ["body"] = "array msgtype" }),
            // What Synapse 1.67 accepts from an ordinary client (200): the reply is a plain message.
            Text("$reply-string", roomId, "@human:localhost", "reply with a string relation",
                new JsonObject { ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = "not-an-object" } }),
            Raw("$relates-string", "m.room.message", new JsonObject { ["msgtype"] = "m.text", ["body"] = "x", ["m.relates_to"] = "nope" }),
            Raw("$key-number", "m.reaction", new JsonObject { ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = "$good-1", ["key"] = 7 } }),
            Raw("$redacts-object", "m.room.redaction", new JsonObject(), new JsonObject { ["redacts"] = new JsonObject { ["a"] = 1 } }),
            Raw("$membership-number", "m.room.member", new JsonObject { ["membership"] = 3 }, new JsonObject { ["state_key"] = "@odd:localhost" }),
            Raw("$name-number", "m.room.name", new JsonObject { ["name"] = 5 }, new JsonObject { ["state_key"] = "" }),
            Raw("$content-string", "m.room.message", "just a string"),
            new JsonObject { ["type"] = "m.room.message", ["room_id"] = roomId, ["sender"] = "@odd:localhost", ["event_id"] = 12345, ["content"] = new JsonObject() },
            Text("$good-2", roomId, "@human:localhost", "last")));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // What has a text body is kept (an unknown msgtype or a relation of the wrong shape only loses what it adds).
        Assert.Equal(["first", "array msgtype", "reply with a string relation", "x", "last"], await ContentsAsync(client, conversation));
        // Each that could not be applied is counted as what it is: the edit, the number body, reaction key, redacts,
        // membership and name, the string content and the number event id.
        Assert.Equal(badBefore + 8, await client.MetricAsync(badSeries));
    }

    [Fact]
    public async Task Text_with_nul_characters_from_matrix_is_stored_without_them_and_blocks_nothing()
    {
        // PostgreSQL text cannot hold U+0000; JSON can, and federation brings whatever JSON a server sends.
        var (bridge, conversation, roomId, alice, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        await using var socket = await bridge.Server.ConnectAsync(alice);

        var response = await transactions.PutAsync("nul", Transaction(
            new JsonObject
            {
                ["type"] = "m.room.member", ["room_id"] = roomId, ["sender"] = "@nul:localhost", ["state_key"] = "@nul:localhost",
                ["event_id"] = "$join-nul", ["content"] = new JsonObject { ["membership"] = "join", ["displayname"] = "Nu\u0000ll" },
            },
            Text("$body-nul", roomId, "@nul:localhost", "a\u0000b"),
            new JsonObject
            {
                ["type"] = "m.room.name", ["room_id"] = roomId, ["sender"] = "@nul:localhost", ["state_key"] = "",
                ["event_id"] = "$name-nul", ["content"] = new JsonObject { ["name"] = "Ro\u0000om" },
            },
            Text("$id-nul\u0000", roomId, "@nul:localhost", "an event id no server makes"),
            Text("$after", roomId, "@nul:localhost", "after")));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(["ab", "an event id no server makes", "after"], await ContentsAsync(client, conversation));
        var members = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/members");
        Assert.Contains(members.EnumerateArray(), m => m.TryGetProperty("display_name", out var name) && name.GetString() == "Null");
        Assert.Equal("Room", (await client.GetJsonAsync($"/api/v1/conversations/{conversation}")).GetProperty("name").GetString());
        await socket.WaitForAsync(f => f.Type == "message.new" && f.Data.GetProperty("content").GetString() == "after");
    }

    [Fact]
    public async Task A_reply_from_matrix_arrives_without_its_quoted_fallback()
    {
        var (bridge, conversation, roomId, alice, client, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        var parent = await client.SendAsync(conversation, "what time is it?");
        var parentEvent = (await BridgeHost.MatrixStateAsync(client, conversation, parent.GetProperty("id").GetGuid(), "sent"))
            .GetProperty("matrix").GetProperty("event_id").GetString()!;

        await transactions.PutAsync("reply", Transaction(Text("$reply", roomId, "@human:localhost",
            $"> <{bridge.Ghost(alice)}> what time is it?\n> second quoted line\n\nnoon",
            new JsonObject
            {
                ["format"] = "org.matrix.custom.html",
                ["formatted_body"] = $"<mx-reply><blockquote>what time is it?</blockquote></mx-reply>noon",
                ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = new JsonObject { ["event_id"] = parentEvent } },
            })));

        var history = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        var reply = history.GetProperty("messages")[1];
        Assert.Equal("noon", reply.GetProperty("content").GetString());
        Assert.Equal(parent.GetProperty("id").GetGuid(), reply.GetProperty("reply_to").GetGuid());
    }

    [Fact]
    public async Task Typing_from_matrix_users_who_are_not_members_is_not_shown()
    {
        var (bridge, conversation, roomId, alice, _, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        await transactions.PutAsync("member", Transaction(Text("$member-speaks", roomId, "@member:localhost", "I am in")));
        await using var socket = await bridge.Server.ConnectAsync(alice);

        JsonObject Typing(string user) => new()
        {
            ["events"] = new JsonArray(),
            ["ephemeral"] = new JsonArray(new JsonObject { ["type"] = "m.typing", ["room_id"] = roomId, ["content"] = new JsonObject { ["user_ids"] = new JsonArray(user) } }),
        };
        await transactions.PutAsync("t-stranger", Typing("@stranger:localhost"));
        await transactions.PutAsync("t-member", Typing("@member:localhost"));

        var typing = await socket.CollectAsync(TimeSpan.FromMilliseconds(500));
        var typists = typing.Where(f => f.Type == "typing").Select(f => f.Json.GetProperty("user_id").GetGuid()).ToList();
        var members = await bridge.Server.Client(alice).GetJsonAsync($"/api/v1/conversations/{conversation}/members");
        var member = members.EnumerateArray().Single(m => m.TryGetProperty("matrix_user_id", out var id) && id.GetString() == "@member:localhost").GetProperty("user_id").GetGuid();
        Assert.Equal([member], typists);
    }

    [Fact]
    public async Task A_matrix_user_who_joins_a_direct_conversations_room_is_removed_and_not_heard()
    {
        var (bridge, conversation, roomId, _, client, transactions) = await SetUpAsync(direct: true);
        await using var _ = bridge;
        await using var __ = transactions;

        await transactions.PutAsync("intruder", Transaction(
            new JsonObject
            {
                ["type"] = "m.room.member", ["room_id"] = roomId, ["sender"] = "@intruder:localhost", ["state_key"] = "@intruder:localhost",
                ["event_id"] = "$intruder-joins", ["content"] = new JsonObject { ["membership"] = "join" },
            },
            Text("$intruder-speaks", roomId, "@intruder:localhost", "hello both")));

        var members = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/members");
        Assert.Equal(2, members.GetArrayLength());
        Assert.Empty(await ContentsAsync(client, conversation));
        await Eventually.Async(() => bridge.Homeserver.Requests.Count("/kick", "POST") >= 1, "the bot removing the intruder");
    }

    [Fact]
    public async Task One_transaction_parks_a_bounded_number_of_relations_to_unknown_events()
    {
        var (bridge, _, roomId, _, _, transactions) = await SetUpAsync();
        await using var _ = bridge;
        await using var __ = transactions;
        var reactions = Enumerable.Range(0, 300).Select(i => new JsonObject
        {
            ["type"] = "m.reaction", ["room_id"] = roomId, ["sender"] = "@flood:localhost", ["event_id"] = $"$flood-{i}",
            ["content"] = new JsonObject { ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = $"$unknown-{i}", ["key"] = "x" } },
        }).ToArray();

        Assert.Equal(HttpStatusCode.OK, (await transactions.PutAsync("flood", Transaction(reactions))).StatusCode);

        await using var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        Assert.Equal(100, await connection.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM matrix_deferred_events"));
    }
}
