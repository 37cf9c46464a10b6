using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace MatrixEmulator.Tests;

/// <summary>
/// Content Synapse 1.67 accepts from clients (restart_client_server.jsonl's odd_* steps) through the in-process user,
/// and what only federation could bring: events with wrong-typed fields, stored and served as they came.
/// </summary>
public sealed class OddContentTests
{
    [Fact]
    public async Task SendRawAsync_accepts_what_Synapse_accepts_and_refuses_what_it_refuses()
    {
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions());
        var human = emulator.CreateUser("human");
        var roomId = await human.CreateRoomAsync("odd");
        using var http = human.CreateHttpClient();

        var reply = await human.SendRawAsync(roomId, "m.room.message", new JsonObject
        {
            ["msgtype"] = "m.text",
            ["body"] = "odd reply",
            ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = "a string" },
        });
        var served = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/rooms/{roomId}/event/{Uri.EscapeDataString(reply)}"))!;
        Assert.Equal("a string", (string?)served["content"]!["m.relates_to"]!["m.in_reply_to"]);

        var custom = await human.SendRawAsync(roomId, "io.nova.odd", new JsonObject { ["m.relates_to"] = "str", ["n"] = 5, ["list"] = new JsonArray(1, "x", null) });
        Assert.Equal(5, (int)emulator.Event(custom)!.Content["n"]!);
        await human.SendRawAsync(roomId, "io.nova.odd_state", new JsonObject { ["name"] = 12 }, stateKey: "k");
        var state = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/rooms/{roomId}/state/io.nova.odd_state/k"))!;
        Assert.Equal(12, (int)state["name"]!);

        var body = await Assert.ThrowsAsync<MatrixException>(() => human.SendRawAsync(roomId, "m.room.message", new JsonObject { ["msgtype"] = "m.text", ["body"] = 42 }));
        Assert.Equal((400, "M_UNKNOWN", "'body' not a string type"), (body.Status, body.Errcode, body.Error));
        var noType = await Assert.ThrowsAsync<MatrixException>(() => human.SendRawAsync(roomId, "m.room.message", new JsonObject { ["body"] = "x" }));
        Assert.Equal("'msgtype' not in content", noType.Error);
        var real = await Assert.ThrowsAsync<MatrixException>(() => human.SendRawAsync(roomId, "io.nova.odd", new JsonObject { ["x"] = 1.5 }));
        Assert.Equal((400, "M_BAD_JSON", "Bad JSON value: float"), (real.Status, real.Errcode, real.Error));
        var unknownParent = await Assert.ThrowsAsync<MatrixException>(() => human.SendRawAsync(roomId, "m.room.message", new JsonObject
        {
            ["msgtype"] = "m.text",
            ["body"] = "x",
            ["m.relates_to"] = new JsonObject { ["rel_type"] = "org.custom", ["event_id"] = "$nope" },
        }));
        Assert.Equal("Can't send relation to unknown event", unknownParent.Error);
        Assert.Empty(emulator.ServerErrors);
    }

    [Fact]
    public async Task An_upload_without_a_declared_length_is_refused_as_Synapse_refuses_it()
    {
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions());
        var human = emulator.CreateUser("human");
        using var http = human.CreateHttpClient();

        // A stream that cannot tell its length goes out chunked.
        using var chunked = new StreamContent(new UnseekableStream([1, 2, 3]));
        chunked.Headers.ContentType = new MediaTypeHeaderValue("audio/ogg");
        using var refused = await http.PostAsync("_matrix/media/v3/upload", chunked);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        var error = (await refused.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.Equal(("M_UNKNOWN", "Request must specify a Content-Length"), ((string?)error["errcode"], (string?)error["error"]));

        using var declared = new ByteArrayContent([1, 2, 3]);
        declared.Headers.ContentType = new MediaTypeHeaderValue("audio/ogg");
        using var accepted = await http.PostAsync("_matrix/media/v3/upload", declared);
        Assert.Equal(HttpStatusCode.OK, accepted.StatusCode);
    }

    private sealed class UnseekableStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }

    [Fact]
    public async Task Federated_events_with_wrong_types_are_stored_served_and_pushed_as_they_came()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions { Appservice = AppserviceRegistration.NovaChat(appservice.Url), TimeScale = 0.01 });
        var human = emulator.CreateUser("human");
        var roomId = await human.CreateRoomAsync("federated");
        await InviteAndJoinGhostAsync(emulator, human, roomId);
        var target = human.SendText(roomId, "target");
        const string Remote = "@remote:other.example";

        var redaction = emulator.InjectFederatedEvent(roomId, new JsonObject
        {
            ["type"] = "m.room.redaction", ["sender"] = Remote, ["content"] = new JsonObject(), ["redacts"] = 12345,
        });
        var member = emulator.InjectFederatedEvent(roomId, new JsonObject
        {
            ["type"] = "m.room.member", ["sender"] = Remote, ["state_key"] = Remote, ["content"] = new JsonObject { ["membership"] = 5 },
        });
        var name = emulator.InjectFederatedEvent(roomId, new JsonObject
        {
            ["type"] = "m.room.name", ["sender"] = Remote, ["state_key"] = "", ["content"] = new JsonObject { ["name"] = new JsonArray("not", "a", "string") },
        });
        var reaction = emulator.InjectFederatedEvent(roomId, new JsonObject
        {
            ["type"] = "m.reaction", ["sender"] = Remote,
            ["content"] = new JsonObject { ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = target, ["key"] = 7 } },
        });
        var message = emulator.InjectFederatedEvent(roomId, new JsonObject
        {
            ["type"] = "m.room.message", ["sender"] = Remote, ["event_id"] = "$chosen-by-the-test", ["origin_server_ts"] = 1000,
            ["content"] = new JsonObject { ["msgtype"] = "m.text", ["body"] = 42 }, ["hashes"] = new JsonObject(), ["io.nova.extra"] = true,
        });

        // Stored as sent: a numeric redacts redacts nothing; a numeric membership is no membership, an array no name.
        Assert.Equal("$chosen-by-the-test", message);
        Assert.Equal(1000, emulator.OriginServerTs(message));
        Assert.Null(emulator.Event(message)!.Body);
        Assert.Equal(42, (int)emulator.Event(message)!.Content["body"]!);
        Assert.Null(emulator.Event(target)!.RedactedBy);
        Assert.Equal("target", emulator.Event(target)!.Body);
        Assert.DoesNotContain(Remote, emulator.Members(roomId));
        Assert.Null(emulator.Room(roomId)!.Name);
        Assert.Equal(5, emulator.CountEvents(roomId, Remote));

        // Served the same way by /event, /messages and /sync, and pushed to the appservice.
        using var http = human.CreateHttpClient();
        var served = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/rooms/{roomId}/event/{Uri.EscapeDataString(redaction)}"))!;
        Assert.Equal(12345, (int)served["redacts"]!);
        var chunk = ((JsonArray)(await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/rooms/{roomId}/messages?dir=b&limit=10"))!["chunk"]!)
            .ToDictionary(e => (string)e!["event_id"]!, e => e!.AsObject());
        Assert.Equal(5, (int)chunk[member]["content"]!["membership"]!);
        Assert.Equal(3, ((JsonArray)chunk[name]["content"]!["name"]!).Count);
        Assert.Equal(7, (int)chunk[reaction]["content"]!["m.relates_to"]!["key"]!);
        Assert.True((bool)chunk[message]["io.nova.extra"]!);
        Assert.False(chunk[message].ContainsKey("hashes"));
        var sync = await http.GetAsync("_matrix/client/v3/sync?timeout=0");
        Assert.Equal(HttpStatusCode.OK, sync.StatusCode);
        var timeline = ((JsonArray)(await sync.Content.ReadFromJsonAsync<JsonObject>())!["rooms"]!["join"]![roomId]!["timeline"]!["events"]!).Select(e => (string)e!["event_id"]!);
        Assert.Contains(message, timeline);

        await emulator.Appservice.WaitForAsync(a => a.Any(x => x.EventIds.Contains(message) && x.Succeeded), TimeSpan.FromSeconds(20));
        var pushed = appservice.Received.SelectMany(r => r.Body?["events"] as JsonArray ?? []).Single(e => (string?)e!["event_id"] == redaction)!;
        Assert.Equal(12345, (int)pushed["redacts"]!);
        Assert.Empty(emulator.ServerErrors);
    }

    // The ghost's joining makes the appservice interested in the room.
    private static async Task InviteAndJoinGhostAsync(HomeserverEmulator emulator, MatrixUser human, string roomId)
    {
        using var http = new HttpClient { BaseAddress = emulator.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", emulator.Options.Appservice!.AsToken);
        (await http.PostAsJsonAsync("_matrix/client/v3/register", new { type = "m.login.application_service", username = "nova_ghost" })).EnsureSuccessStatusCode();
        await human.InviteAsync(roomId, "@nova_ghost:localhost");
        await emulator.LoginAs("@nova_ghost:localhost").JoinAsync(roomId);
    }
}
