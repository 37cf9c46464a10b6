using System.Text.Json;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Synapse;

/// <summary>Scenario a, shared by both modes: app → Matrix as the right account, and what a human does in the room
/// (text, edit, reaction, redactions) reaching the app's WebSocket live; REST history agrees.</summary>
internal static class HappyPath
{
    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    public static string Content(this LiveFrame frame) =>
        frame.Data.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : "";

    public static async Task RunAsync(SynapseBridge bridge)
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var (conversation, roomId, human) = await bridge.BridgedGroupAsync(alice, "Happy path", bob);
        using var _ = human;
        await using var socket = await bridge.Server.ConnectAsync(alice);
        var client = bridge.Server.Client(alice);

        var sent = await client.SendAsync(conversation, "hello from the app");
        var expectedBody = bridge.BodyOf(alice, "hello from the app");
        var room = await SynapseBridge.RoomMessagesAsync(human, roomId, m => m.Any(e => e.Body == expectedBody), "the app message in the room");
        var mirrored = Assert.Single(room, e => e.Body == expectedBody);
        Assert.Equal(bridge.SenderOf(alice), mirrored.Sender);
        var state = await MatrixStateAsync(client, conversation, sent.GetProperty("id").GetGuid(), "sent");
        Assert.Equal(mirrored.EventId, state.GetProperty("matrix").GetProperty("event_id").GetString());

        // The human's own client sees it through /sync as well.
        var (sync, _) = await human.SyncAsync(null, TimeSpan.Zero);
        Assert.Contains(MatrixHttpClient.SyncTimeline(sync), x => x.RoomId == roomId && x.Event.EventId == mirrored.EventId);

        var textId = await human.SendTextAsync(roomId, "hello from matrix");
        var incoming = await socket.WaitForAsync(f => f.Type == "message.new" && f.Content() == "hello from matrix", Wait);
        var humanAppId = incoming.Data.GetProperty("sender_id").GetGuid();
        Assert.NotEqual(alice, humanAppId);
        Assert.NotEqual(bob, humanAppId);
        var humanMessageId = incoming.Data.GetProperty("id").GetGuid();

        await human.EditAsync(roomId, textId, "hello from matrix (edited)");
        var edited = await socket.WaitForAsync(f => f.Type == "message.edited", Wait);
        Assert.Equal("hello from matrix (edited)", edited.Content());

        var reactionId = await human.ReactAsync(roomId, mirrored.EventId, "👍");
        var reaction = await socket.WaitForAsync(f => f.Type == "reaction.added", Wait);
        Assert.Equal(sent.GetProperty("id").GetGuid(), reaction.Data.GetProperty("message_id").GetGuid());
        Assert.Equal("👍", reaction.Data.GetProperty("reaction").GetString());

        await human.RedactAsync(roomId, reactionId);
        Assert.Equal("👍", (await socket.WaitForAsync(f => f.Type == "reaction.removed", Wait)).Data.GetProperty("reaction").GetString());

        await human.RedactAsync(roomId, textId);
        Assert.Equal(humanMessageId, (await socket.WaitForAsync(f => f.Type == "message.deleted", Wait)).Data.GetProperty("message_id").GetGuid());

        // The app's message came back from Synapse (transaction or /sync) and was not stored twice.
        var history = await bridge.MessagesAsync(alice, conversation);
        Assert.Single(history, m => m.GetProperty("content").GetString() == "hello from the app");
        Assert.All(history.Where(m => m.GetProperty("id").GetGuid() == humanMessageId),
            m => Assert.NotEqual(JsonValueKind.Null, m.GetProperty("deleted_at").ValueKind));
        // ... and the room holds it once.
        Assert.Single(await human.MessagesAsync(roomId), e => e.Body == expectedBody);
    }

    /// <summary>Waits until the API reports the message's Matrix delivery state, and returns the message.</summary>
    public static async Task<JsonElement> MatrixStateAsync(HttpClient client, Guid conversationId, Guid messageId, string state, TimeSpan? timeout = null)
    {
        JsonElement last = default;
        try
        {
            await SynapseBridge.EventuallyAsync(async () =>
            {
                last = await client.GetJsonAsync($"/api/v1/conversations/{conversationId}/messages/{messageId}");
                return last.GetProperty("matrix") is { ValueKind: JsonValueKind.Object } matrix && matrix.GetProperty("state").GetString() == state;
            }, $"message {messageId} to reach Matrix state {state}", timeout ?? Wait);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message} Last seen: {last}");
        }
        return last;
    }
}
