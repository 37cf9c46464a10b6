using System.Net;
using MatrixEmulator;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>Chat → Matrix in appservice mode: what users do in the app appears in the room, as them.</summary>
public sealed class OutboundBridgeTests
{
    [Fact]
    public async Task Conversation_messages_edits_reactions_and_deletes_are_mirrored_as_the_right_ghosts()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = bridge.Server.Client(alice);
        var conversation = await aliceClient.CreateGroupAsync("Bridged", bob);

        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        var room = bridge.Homeserver.Room(roomId)!;
        Assert.Equal("Bridged", room.Name);
        await Eventually.Async(() => bridge.Homeserver.Members(roomId).Contains(bridge.Ghost(bob)), "bob's ghost joined");
        var create = bridge.Homeserver.Timeline(roomId).First(e => e.Type == "m.room.create");
        Assert.Equal(conversation.ToString(), (string?)create.Content["io.nova.conversation_id"]);

        var hello = await aliceClient.SendAsync(conversation, "hello matrix");
        var helloId = hello.GetProperty("id").GetGuid();
        var sent = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Body == "hello matrix"), "the message");
        Assert.Equal(bridge.Ghost(alice), sent.Sender);
        Assert.Equal("m.text", (string?)sent.Content["msgtype"]);
        var delivered = await BridgeHost.MatrixStateAsync(aliceClient, conversation, helloId, "sent");
        Assert.Equal(sent.EventId, delivered.GetProperty("matrix").GetProperty("event_id").GetString());

        var reply = await (await bridge.Server.Client(bob).PostJsonAsync($"/api/v1/conversations/{conversation}/messages", new { content = "hi alice", reply_to = helloId }))
            .JsonAsync(HttpStatusCode.Created);
        var replyEvent = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => BridgeHost.WithoutReplyFallback(e.Body) == "hi alice"), "the reply");
        Assert.Equal(bridge.Ghost(bob), replyEvent.Sender);
        Assert.Equal(sent.EventId, (string?)replyEvent.Content["m.relates_to"]!["m.in_reply_to"]!["event_id"]);
        // The fallback Element shows for clients that do not render replies: the parent quoted, plain and in <mx-reply>.
        Assert.Equal($"> <{bridge.Ghost(alice)}> hello matrix\n\nhi alice", replyEvent.Body);
        Assert.StartsWith("<mx-reply><blockquote>", (string?)replyEvent.Content["formatted_body"]);
        Assert.EndsWith("</mx-reply>hi alice", (string?)replyEvent.Content["formatted_body"]);

        await aliceClient.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{helloId}", new { content = "hello matrix, edited" });
        var edit = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => (string?)e.Content["m.relates_to"]?["rel_type"] == "m.replace"), "the edit");
        Assert.Equal(sent.EventId, (string?)edit.Content["m.relates_to"]!["event_id"]);
        Assert.Equal("hello matrix, edited", (string?)edit.Content["m.new_content"]!["body"]);
        Assert.Equal("* hello matrix, edited", edit.Body);

        var thumbs = Uri.EscapeDataString("👍");
        await bridge.Server.Client(bob).PutAsync($"/api/v1/conversations/{conversation}/messages/{helloId}/reactions/{thumbs}", null);
        var reaction = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Type == "m.reaction"), "the reaction");
        Assert.Equal(bridge.Ghost(bob), reaction.Sender);
        Assert.Equal("👍", (string?)reaction.Content["m.relates_to"]!["key"]);
        Assert.Equal(sent.EventId, (string?)reaction.Content["m.relates_to"]!["event_id"]);

        await bridge.Server.Client(bob).DeleteAsync($"/api/v1/conversations/{conversation}/messages/{helloId}/reactions/{thumbs}");
        await Eventually.Async(() => bridge.Homeserver.Event(reaction.EventId)?.RedactedBy is not null, "the reaction's redaction");

        await aliceClient.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{helloId}");
        await Eventually.Async(() => bridge.Homeserver.Event(sent.EventId)?.RedactedBy is not null, "the message's redaction");
        Assert.Equal(bridge.Ghost(alice), bridge.Homeserver.Event(bridge.Homeserver.Event(sent.EventId)!.RedactedBy!)!.Sender);

        // Synapse's web server (Twisted) spools every request body of undeclared length to a temporary file, on its one
        // reactor thread: a cost on every event the bridge sends (docs/performance.md, synapse-bridge).
        Assert.Empty(bridge.Homeserver.Requests.All.Where(r => r.ChunkedBody).Select(r => $"{r.Method} {r.Path}"));

        // Every app action became exactly one Matrix event: nothing duplicated.
        Assert.Single(bridge.Homeserver.Timeline(roomId), e => e.Type == "m.room.message" && (string?)e.OriginalContent["body"] == "hello matrix");
    }

    [Fact]
    public async Task Membership_and_name_changes_are_mirrored()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var (owner, carol) = (Guid.NewGuid(), Guid.NewGuid());
        var client = bridge.Server.Client(owner);
        var conversation = await client.CreateGroupAsync("Before");
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");

        await client.PostJsonAsync($"/api/v1/conversations/{conversation}/members", new { user_id = carol });
        await Eventually.Async(() => bridge.Homeserver.Members(roomId).Contains(bridge.Ghost(carol)), "carol joined");

        await client.PatchJsonAsync($"/api/v1/conversations/{conversation}", new { name = "After" });
        await Eventually.Async(() => bridge.Homeserver.Room(roomId)!.Name == "After", "the new name");

        await client.DeleteAsync($"/api/v1/conversations/{conversation}/members/{carol}");
        await Eventually.Async(() => !bridge.Homeserver.Members(roomId).Contains(bridge.Ghost(carol)), "carol removed");
        Assert.True(bridge.Homeserver.UserExists(bridge.Ghost(carol)));
    }

    [Fact]
    public async Task Ghosts_carry_the_display_name_from_the_users_token()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var alice = Guid.NewGuid();
        var conversation = await bridge.Server.Client(alice, name: "Alice Liddell").CreateGroupAsync("Names");
        await Eventually.Async(() => bridge.Homeserver.DisplayName(bridge.Ghost(alice)) == "Alice Liddell", "the ghost's display name");

        await bridge.Server.Client(alice, name: "Alice L.").SendAsync(conversation, "I changed my name");
        await Eventually.Async(() => bridge.Homeserver.DisplayName(bridge.Ghost(alice)) == "Alice L.", "the renamed ghost");
    }

    [Fact]
    public async Task A_name_that_reached_another_instance_renames_the_ghost_sent_from_this_one()
    {
        await using var bridge = await BridgeHost.StartAsync(settings: new() { ["Auth:ProfileCacheLifetime"] = "00:00:01" });
        // Another instance on the same database that does not bridge, so that this one sends everything.
        await using var other = await ChatServer.StartAsync(
            new Dictionary<string, string?>(bridge.Server.Settings) { ["urls"] = "http://127.0.0.1:0", ["Matrix:Enabled"] = "false" }, reuse: bridge.Server);
        var alice = Guid.NewGuid();
        var conversation = await bridge.Server.Client(alice, name: "Alice Liddell").CreateGroupAsync("Names");
        await Eventually.Async(() => bridge.Homeserver.DisplayName(bridge.Ghost(alice)) == "Alice Liddell", "the ghost's display name");

        // Her next token names her anew, and its first request goes to the other instance.
        Assert.True((await other.Client(alice, name: "Alice L.").GetAsync("/api/v1/conversations")).IsSuccessStatusCode);
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        // A token without a name states none: what this instance knows decides.
        await bridge.Server.Client(alice).SendAsync(conversation, "sent here");

        await Eventually.Async(() => bridge.Homeserver.DisplayName(bridge.Ghost(alice)) == "Alice L.", "the name stored by the other instance");
    }
}
