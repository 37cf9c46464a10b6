using System.Text.Json;
using RealtimeChat.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RealtimeChat.Tests.Synapse;

/// <summary>Scenario h: the seed's rollout turns Matrix on for a database that already has conversations.</summary>
[Collection(SynapseCollection.Name)]
public sealed class LateEnableTests(ITestOutputHelper output)
{
    [SynapseFact]
    public async Task H_a_conversation_from_before_matrix_was_enabled_gets_a_room_and_its_messages_with_their_timestamps()
    {
        // Synapse already has the registration; the service starts with the bridge off.
        await using var bridge = await SynapseBridge.StartAsync(settings: new() { ["Matrix:Enabled"] = "false" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = bridge.Server.Client(alice);
        var conversation = await client.CreateGroupAsync("Before Matrix", bob);
        var old = new List<JsonElement>();
        foreach (var i in Enumerable.Range(1, 5))
        {
            old.Add(await client.SendAsync(conversation, $"before matrix {i}"));
        }
        // Let the stored timestamps age, so a post with "now" cannot pass for one with the original time.
        var lastCreated = old[^1].GetProperty("created_at").GetDateTimeOffset();
        if (lastCreated + TimeSpan.FromSeconds(3) - DateTimeOffset.UtcNow is { Ticks: > 0 } wait)
        {
            await Task.Delay(wait);
        }

        await bridge.RestartServiceAsync(new() { ["Matrix:Enabled"] = "true" });
        client = bridge.Server.Client(alice);
        // New work in the old conversation: a bridge that makes rooms on demand has a reason to make this one now.
        var after = await client.SendAsync(conversation, "after enable");
        string roomId;
        try
        {
            roomId = await bridge.RoomOfAsync(conversation, TimeSpan.FromSeconds(20));
        }
        catch (TimeoutException)
        {
            var message = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages/{after.GetProperty("id").GetGuid()}");
            Assert.Fail($"No room 20 s after enabling Matrix and sending a new message; that message stands at {message.GetProperty("matrix")}.");
            return;
        }
        using var human = await bridge.HumanInRoomAsync(roomId);
        var room = await SynapseBridge.RoomMessagesAsync(human, roomId, m => m.Any(e => e.Body == "after enable"), "the new message in the room");

        Assert.Equal([.. old.Select(m => m.GetProperty("content").GetString()), "after enable"], room.Select(e => e.Body));
        foreach (var (message, evt) in old.Zip(room))
        {
            var created = message.GetProperty("created_at").GetDateTimeOffset().ToUnixTimeMilliseconds();
            output.WriteLine($"{evt.Body}: origin_server_ts - created_at = {evt.OriginServerTs - created} ms");
            Assert.True(Math.Abs(evt.OriginServerTs - created) < 1000,
                $"{evt.Body}: origin_server_ts {evt.OriginServerTs} is {evt.OriginServerTs - created} ms from created_at {created}.");
            Assert.Equal(bridge.Ghost(alice), evt.Sender);
        }
    }
}
