using Dapper;
using MatrixEmulator;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>The seed's design: one service account sends for everyone and reads the rooms with /sync.</summary>
public sealed class ClientModeTests
{
    [Fact]
    public async Task Service_account_mirrors_app_messages_and_sync_brings_matrix_messages_back_live()
    {
        await using var bridge = await BridgeHost.StartAsync("Client");
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = bridge.Server.Client(alice);
        var conversation = await client.CreateGroupAsync("Seed style", bob);
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        var service = "@nova-service:localhost";
        Assert.Contains($"@{bob:N}:localhost", bridge.Homeserver.Members(roomId, "invite"));

        var sent = await client.SendAsync(conversation, "hello from the app");
        var mirrored = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Type == "m.room.message"), "the mirrored message");
        Assert.Equal(service, mirrored.Sender);
        Assert.Equal(alice.ToString(), (string?)mirrored.Content["io.nova.sender"]);
        Assert.Equal($"@{alice:N}:localhost: hello from the app", mirrored.Body);
        await BridgeHost.MatrixStateAsync(client, conversation, sent.GetProperty("id").GetGuid(), "sent");

        await using var socket = await bridge.Server.ConnectAsync(alice);
        var human = bridge.Homeserver.CreateUser("human", "humanpass");
        await bridge.Homeserver.LoginAs(service).InviteAsync(roomId, human.UserId);
        await human.JoinAsync(roomId);
        // A Matrix user cannot pose as an app user by copying the service account's sender field.
        human.Send(roomId, "m.room.message", new System.Text.Json.Nodes.JsonObject
        {
            ["msgtype"] = "m.text", ["body"] = "hi from matrix", ["io.nova.sender"] = alice.ToString(),
        });

        var incoming = await socket.WaitForAsync(f => f.Type == "message.new" && f.Data.GetProperty("content").GetString() == "hi from matrix");
        Assert.NotEqual(alice, incoming.Data.GetProperty("sender_id").GetGuid());
        Assert.Equal(RealtimeChat.Matrix.MatrixUsers.ExternalUserId(human.UserId), incoming.Data.GetProperty("sender_id").GetGuid());

        // Our own message came back through /sync and was not stored again.
        var history = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(["hello from the app", "hi from matrix"], history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));
    }

    [Fact]
    public async Task Sync_resumes_from_the_saved_token_after_a_restart_without_replaying()
    {
        var (bridge, alice, conversation, roomId, human) = await HumanInRoomAsync("Resume", "before restart");
        await using var _ = bridge;
        var client = bridge.Server.Client(alice);

        await bridge.Server.StopAsync();
        human.SendText(roomId, "while we were down");
        var requestsBeforeRestart = bridge.Homeserver.Requests.All.Count;
        await bridge.RestartAsync();

        await Eventually.Async(async () => (await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages").GetArrayLength() >= 2, "the missed message");
        await Task.Delay(300);
        var history = await bridge.Server.Client(alice).GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(["before restart", "while we were down"], history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));
        await using var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        Assert.NotNull(await connection.QuerySingleOrDefaultAsync<string>("SELECT next_batch FROM matrix_sync_state"));
        // Events already held are skipped anyway, so only the requests show whether the restart synced from the start.
        var syncsAfterRestart = bridge.Homeserver.Requests.All.Skip(requestsBeforeRestart).Where(r => r.Path.EndsWith("/sync", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(syncsAfterRestart);
        Assert.All(syncsAfterRestart, r => Assert.Contains("since=", r.Query));
    }

    [Fact]
    public async Task After_a_long_stop_a_room_that_had_more_than_one_sync_holds_arrives_whole_and_in_order()
    {
        var (bridge, alice, conversation, roomId, human) = await HumanInRoomAsync("Busy while we were down", "before the stop");
        await using var _ = bridge;
        var client = bridge.Server.Client(alice);

        // One sync's timeline holds 100 events: Synapse sends the last ones, "limited", and the rest must be read.
        await bridge.Server.StopAsync();
        var missed = Enumerable.Range(1, 250).Select(i => $"while we were down {i}").ToList();
        foreach (var body in missed)
        {
            human.SendText(roomId, body);
        }
        await bridge.RestartAsync();

        async Task<List<string?>?> HistoryAsync()
        {
            var all = await Synapse.SynapseBridge.MessagesAsync(client, conversation);
            return all.Count >= 251 ? [.. all.Select(m => m.GetProperty("content").GetString())] : null;
        }
        Assert.Equal(["before the stop", .. missed], await Eventually.Async(HistoryAsync, "every message sent while the service was down"));
    }

    /// <summary>A client-mode bridge with a group whose room has a human in it, whose first message the app has.</summary>
    private static async Task<(BridgeHost Bridge, Guid Alice, Guid Conversation, string RoomId, MatrixUser Human)> HumanInRoomAsync(string name, string firstMessage)
    {
        var bridge = await BridgeHost.StartAsync("Client");
        var alice = Guid.NewGuid();
        var client = bridge.Server.Client(alice);
        var conversation = await client.CreateGroupAsync(name);
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        var human = bridge.Homeserver.CreateUser("human", "humanpass");
        await bridge.Homeserver.LoginAs("@nova-service:localhost").InviteAsync(roomId, human.UserId);
        await human.JoinAsync(roomId);
        human.SendText(roomId, firstMessage);
        await Eventually.Async(async () => (await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages").GetArrayLength() == 1, "the first message");
        return (bridge, alice, conversation, roomId, human);
    }

    [Fact]
    public async Task A_rejected_access_token_is_a_clear_error_and_a_metric_while_the_chat_keeps_working()
    {
        await using var bridge = await BridgeHost.StartAsync("Client", new() { ["Matrix:AccessToken"] = "revoked-token", ["Matrix:Password"] = null });
        var alice = Guid.NewGuid();
        var conversation = await bridge.Server.Client(alice).CreateGroupAsync("Still works");
        await bridge.Server.Client(alice).SendAsync(conversation, "the chat does not care");

        await Eventually.Async(async () =>
            System.Text.RegularExpressions.Regex.IsMatch(await bridge.Server.Client().GetStringAsync("/metrics"), @"matrix_errors_total\{error=""M_UNKNOWN_TOKEN""\} [1-9]"),
            "the token error metric");
        var history = await bridge.Server.Client(alice).GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal("pending", history.GetProperty("messages")[0].GetProperty("matrix").GetProperty("state").GetString());
    }

    [Fact]
    public async Task A_message_delayed_by_an_outage_carries_its_original_time_in_its_content()
    {
        // Only appservices may set an event's time (the ts parameter); a client's events are dated when sent.
        await using var bridge = await BridgeHost.StartAsync("Client");
        var alice = Guid.NewGuid();
        var client = bridge.Server.Client(alice);
        var conversation = await client.CreateGroupAsync("Outage");
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the room set-up");

        DateTimeOffset createdAt;
        using (bridge.Homeserver.Faults.Inject(Fault.Down()))
        {
            createdAt = (await client.SendAsync(conversation, "said during the outage")).GetProperty("created_at").GetDateTimeOffset();
            await Task.Delay(TimeSpan.FromSeconds(1));
        }
        var evt = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId)
            .FirstOrDefault(e => ((string?)e.Content["body"])?.EndsWith("said during the outage", StringComparison.Ordinal) == true), "the delayed message");
        Assert.True(evt.Content["io.nova.created_at"] is not null, "the event does not say when the message was sent");
        Assert.Equal(createdAt.ToUnixTimeMilliseconds(), (long)evt.Content["io.nova.created_at"]!);
    }

    [Fact]
    public async Task Edits_deletes_and_audio_are_mirrored_by_the_service_account()
    {
        await using var bridge = await BridgeHost.StartAsync("Client");
        var alice = Guid.NewGuid();
        var client = bridge.Server.Client(alice);
        var conversation = await client.CreateGroupAsync("Seed phases");
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        const string service = "@nova-service:localhost";

        var text = await client.SendAsync(conversation, "first draft");
        var textId = text.GetProperty("id").GetGuid();
        var original = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Type == "m.room.message"), "the message");
        await client.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{textId}", new { content = "final draft" });
        var edit = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => (string?)e.Content["m.relates_to"]?["rel_type"] == "m.replace"), "the edit");
        Assert.Equal(service, edit.Sender);
        Assert.Equal(original.EventId, (string?)edit.Content["m.relates_to"]!["event_id"]);
        Assert.Equal($"@{alice:N}:localhost: final draft", (string?)edit.Content["m.new_content"]!["body"]);

        await client.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{textId}");
        await Eventually.Async(() => bridge.Homeserver.Event(original.EventId)?.RedactedBy is not null, "the redaction");

        var audio = new byte[5000];
        Random.Shared.NextBytes(audio);
        using var form = new System.Net.Http.MultipartFormDataContent();
        var file = new System.Net.Http.ByteArrayContent(audio);
        file.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("audio/ogg");
        form.Add(file, "file", "note.ogg");
        Assert.Equal(System.Net.HttpStatusCode.Created, (await client.PostAsync($"/api/v1/conversations/{conversation}/media", form)).StatusCode);
        var voice = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => (string?)e.Content["msgtype"] == "m.audio"), "the audio");
        Assert.Equal(service, voice.Sender);
        Assert.Equal(alice.ToString(), (string?)voice.Content["io.nova.sender"]);
        Assert.Equal(audio, bridge.Homeserver.Media((string)voice.Content["url"]!)!.Value.Bytes);
    }
}
