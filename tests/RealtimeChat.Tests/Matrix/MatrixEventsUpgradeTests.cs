using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>
/// Migration 0006 moved the Matrix ids off messages and reactions into the bridge's <c>matrix_events</c>. A database
/// that was bridged before it must go on as if nothing happened: the same events, no redelivery applied twice.
/// </summary>
public sealed class MatrixEventsUpgradeTests
{
    [Fact]
    public async Task Everything_bridged_before_the_move_to_matrix_events_is_still_known_after_it()
    {
        await using var bridge = await BridgeHost.StartAsync();
        var alice = Guid.NewGuid();
        var app = bridge.Server.Client(alice);
        var conversation = await app.CreateGroupAsync("Upgraded");
        var roomId = await Eventually.Async(() => bridge.RoomOf(conversation), "the room");
        var human = bridge.Homeserver.CreateUser("human", "humanpass", "Hugh Mann");
        await bridge.Homeserver.LoginAs($"@nova-bridge:{bridge.Homeserver.ServerName}").InviteAsync(roomId, human.UserId);
        await human.JoinAsync(roomId);

        var appMessage = (await app.SendAsync(conversation, "from the app")).GetProperty("id").GetGuid();
        var appEvent = await Eventually.Async(() => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Body == "from the app")?.EventId, "the app's message");
        var humanEvent = human.SendText(roomId, "from matrix");
        var humanReaction = human.React(roomId, appEvent, "🔥");
        await app.PutAsync($"/api/v1/conversations/{conversation}/messages/{appMessage}/reactions/{Uri.EscapeDataString("👍")}", null);
        var aliceReaction = await Eventually.Async(
            () => bridge.Homeserver.Timeline(roomId).FirstOrDefault(e => e.Type == "m.reaction" && e.Sender == bridge.Ghost(alice))?.EventId, "alice's reaction");
        await Eventually.Async(async () => (await MessagesAsync(app, conversation)).Count == 2 && await bridge.PendingActionsAsync() == 0, "both directions");
        await Eventually.Async(async () => await ReactionCountAsync(app, conversation) == 2, "both reactions");

        // Put the database back in the shape version 0005 left it (ids on the rows), then start on it: 0006 and 0007 run again.
        await using (var connection = await bridge.Server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync(DowngradeTo0005(TestDatabase.IsPostgres));
        }
        await bridge.RestartAsync();
        await using var socket = await bridge.Server.ConnectAsync(alice);

        var messages = await MessagesAsync(app, conversation);
        Assert.Equal(appEvent, Matrix(messages, "from the app"));
        Assert.Equal(humanEvent, Matrix(messages, "from matrix"));

        // A redelivery of an event applied before the upgrade changes nothing.
        await using (var homeserver = new TransactionClient(bridge))
        {
            var again = await homeserver.PutAsync("after-upgrade", TransactionClient.Transaction(TransactionClient.Text(humanEvent, roomId, human.UserId, "from matrix")));
            Assert.True(again.IsSuccessStatusCode);
        }
        Assert.Equal(2, (await MessagesAsync(app, conversation)).Count);

        // Relations to events mapped before the upgrade find their targets both ways.
        human.Redact(roomId, humanReaction);
        Assert.Equal("🔥", (await socket.WaitForAsync(f => f.Type == "reaction.removed")).Data.GetProperty("reaction").GetString());
        await app.PatchJsonAsync($"/api/v1/conversations/{conversation}/messages/{appMessage}", new { content = "from the app, edited" });
        await app.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{appMessage}/reactions/{Uri.EscapeDataString("👍")}");
        await Eventually.Async(async () => await bridge.PendingActionsAsync() == 0, "the edit and the unreaction");
        var timeline = bridge.Homeserver.Timeline(roomId);
        Assert.Contains(timeline, e => e.Type == "m.room.message" && e.OriginalContent["m.relates_to"]?["event_id"]?.GetValue<string>() == appEvent
            && e.OriginalContent["m.relates_to"]?["rel_type"]?.GetValue<string>() == "m.replace");
        Assert.Contains(timeline, e => e.Type == "m.room.redaction" && e.Redacts == aliceReaction);
    }

    private static async Task<List<JsonNode>> MessagesAsync(HttpClient app, Guid conversation) =>
        [.. JsonNode.Parse((await app.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetRawText())!["messages"]!.AsArray().OfType<JsonNode>()];

    private static async Task<int> ReactionCountAsync(HttpClient app, Guid conversation) =>
        (await MessagesAsync(app, conversation)).Sum(m => m["reactions"]!.AsArray().Sum(r => r!["count"]!.GetValue<int>()));

    private static string? Matrix(List<JsonNode> messages, string content)
    {
        var message = messages.Single(m => m["content"]?.GetValue<string>() == content);
        Assert.Equal("sent", message["matrix"]?["state"]?.GetValue<string>());
        return message["matrix"]?["event_id"]?.GetValue<string>();
    }

    private static string DowngradeTo0005(bool postgres) =>
        $"""
        ALTER TABLE messages DROP COLUMN matrix_event_id;
        ALTER TABLE message_reactions DROP COLUMN matrix_event_id;
        DELETE FROM schemaversions WHERE scriptname LIKE '%0007_retired_matrix_columns.sql';
        CREATE TABLE matrix_inbound_events (
            event_id        text PRIMARY KEY,
            conversation_id {(postgres ? "uuid" : "text")} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            applied_at      {(postgres ? "timestamptz" : "text")} NOT NULL
        );
        CREATE INDEX ix_matrix_inbound_events_applied ON matrix_inbound_events (applied_at);
        INSERT INTO matrix_inbound_events (event_id, conversation_id, applied_at) SELECT event_id, conversation_id, recorded_at FROM matrix_events;
        ALTER TABLE messages ADD COLUMN matrix_event_id text;
        ALTER TABLE message_reactions ADD COLUMN matrix_event_id text;
        UPDATE messages SET matrix_event_id = (SELECT e.event_id FROM matrix_events e WHERE e.message_id = messages.id AND e.reaction IS NULL);
        UPDATE message_reactions SET matrix_event_id = (
            SELECT e.event_id FROM matrix_events e
             WHERE e.message_id = message_reactions.message_id AND e.reaction_user_id = message_reactions.user_id AND e.reaction = message_reactions.reaction);
        CREATE INDEX ix_messages_matrix_event ON messages (matrix_event_id) WHERE matrix_event_id IS NOT NULL;
        CREATE INDEX ix_reactions_matrix_event ON message_reactions (matrix_event_id) WHERE matrix_event_id IS NOT NULL;
        DROP TABLE matrix_events;
        DELETE FROM schemaversions WHERE scriptname LIKE '%0006_matrix_events.sql';
        """;
}
