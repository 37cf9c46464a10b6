using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace MatrixEmulator.Tests;

public sealed class FaultAndSyncTests
{
    [Fact]
    public async Task Faults_are_scoped_counted_and_clearable()
    {
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions());
        var human = emulator.CreateUser("human");
        using var http = human.CreateHttpClient();

        using (emulator.Faults.Inject(Fault.RateLimited(TimeSpan.FromMilliseconds(1500)).On("GET", "/account/whoami").ForNext(1)))
        {
            var limited = await http.GetAsync("_matrix/client/v3/account/whoami");
            Assert.Equal((HttpStatusCode)429, limited.StatusCode);
            var body = await limited.Content.ReadFromJsonAsync<JsonObject>();
            Assert.Equal("M_LIMIT_EXCEEDED", (string?)body!["errcode"]);
            Assert.Equal(1500, (int)body["retry_after_ms"]!);
            Assert.Null(limited.Headers.RetryAfter);
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("_matrix/client/v3/account/whoami")).StatusCode);
        }

        var roomId = await human.CreateRoomAsync("room");
        using (emulator.Faults.Inject(Fault.ServerError(503).On("PUT", "/send/")))
        using (emulator.Faults.Inject(Fault.Forbidden("nope").On("GET", "/joined_rooms")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.PutAsJsonAsync($"_matrix/client/v3/rooms/{roomId}/send/m.room.message/t1", new { body = "x" })).StatusCode);
            var forbidden = await http.GetAsync("_matrix/client/v3/joined_rooms");
            Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
            Assert.Equal("nope", (string?)(await forbidden.Content.ReadFromJsonAsync<JsonObject>())!["error"]);
        }

        var down = emulator.Faults.Inject(Fault.Down());
        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync("_matrix/client/v3/joined_rooms"));
        down.Dispose();

        var slow = emulator.Faults.Inject(Fault.Slow(TimeSpan.FromMilliseconds(200)));
        var started = DateTimeOffset.UtcNow;
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("_matrix/client/v3/joined_rooms")).StatusCode);
        Assert.True(DateTimeOffset.UtcNow - started >= TimeSpan.FromMilliseconds(190));
        emulator.Faults.Clear();

        Assert.Equal(3, emulator.Requests.Count("/joined_rooms", "GET"));
        Assert.Equal(0, emulator.Requests.All.Single(r => r.Fault == FaultKind.Down).Status);
        Assert.DoesNotContain(emulator.Timeline(roomId), e => e.Type == "m.room.message");
        Assert.Empty(emulator.ServerErrors);
    }

    [Fact]
    public async Task Incremental_sync_long_polls_until_an_event_and_echoes_the_transaction_id()
    {
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions());
        var alice = emulator.CreateUser("alice");
        var bob = emulator.CreateUser("bob");
        var roomId = await alice.CreateRoomAsync("chat", bob.UserId);
        await bob.JoinAsync(roomId);
        using var http = alice.CreateHttpClient();
        var since = emulator.CurrentSyncToken;

        var poll = http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?timeout=5000&since={since}");
        await Task.Delay(100);
        Assert.False(poll.IsCompleted);
        var eventId = bob.SendText(roomId, "hi alice");
        var sync = (await poll)!;
        var timeline = (JsonArray)sync["rooms"]!["join"]![roomId]!["timeline"]!["events"]!;
        Assert.Equal(eventId, (string?)Assert.Single(timeline)!["event_id"]);
        Assert.Equal(1, (int)sync["rooms"]!["join"]![roomId]!["unread_notifications"]!["notification_count"]!);

        // A retried PUT with the same txn id and the same token gives the same event; another token is another client.
        var first = await http.PutAsJsonAsync($"_matrix/client/v3/rooms/{roomId}/send/m.room.message/abc", new { msgtype = "m.text", body = "once" });
        var retry = await http.PutAsJsonAsync($"_matrix/client/v3/rooms/{roomId}/send/m.room.message/abc", new { msgtype = "m.text", body = "once" });
        var firstId = (string?)(await first.Content.ReadFromJsonAsync<JsonObject>())!["event_id"];
        Assert.Equal(firstId, (string?)(await retry.Content.ReadFromJsonAsync<JsonObject>())!["event_id"]);
        using var otherDevice = emulator.LoginAs(alice.UserId).CreateHttpClient();
        var other = await otherDevice.PutAsJsonAsync($"_matrix/client/v3/rooms/{roomId}/send/m.room.message/abc", new { msgtype = "m.text", body = "once" });
        Assert.NotEqual(firstId, (string?)(await other.Content.ReadFromJsonAsync<JsonObject>())!["event_id"]);

        var next = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?timeout=0&since={sync["next_batch"]}"))!;
        var own = ((JsonArray)next["rooms"]!["join"]![roomId]!["timeline"]!["events"]!).Select(e => (string?)e!["unsigned"]!["transaction_id"]).ToList();
        Assert.Equal(["abc", null], own);
        Assert.Equal(["hi alice", "once", "once"], emulator.Timeline(roomId).Where(e => e.Type == "m.room.message").Select(e => e.Body));
    }

    [Fact]
    public async Task A_limited_sync_timeline_leaves_a_gap_that_messages_fills_from_prev_batch_to_since()
    {
        // Measured on Synapse 1.67.0 (2026-12-02): 3 messages, a sync, 5 more, an incremental sync with a timeline
        // limit of 2 gave b4, b5 and limited; /messages backwards from its prev_batch to the first sync's next_batch
        // gave b3, b2 (limit 2) and then b1: the events after `to`, none at or before it.
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions());
        var human = emulator.CreateUser("human");
        var roomId = await human.CreateRoomAsync("room");
        using var http = human.CreateHttpClient();
        foreach (var i in Enumerable.Range(1, 3))
        {
            human.SendText(roomId, $"a{i}");
        }
        var since = (string)(await http.GetFromJsonAsync<JsonObject>("_matrix/client/v3/sync"))!["next_batch"]!;
        foreach (var i in Enumerable.Range(1, 5))
        {
            human.SendText(roomId, $"b{i}");
        }

        var filter = Uri.EscapeDataString("""{"room":{"timeline":{"limit":2}}}""");
        var sync = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?since={since}&filter={filter}"))!;
        var timeline = sync["rooms"]!["join"]![roomId]!["timeline"]!;
        Assert.True((bool)timeline["limited"]!);
        Assert.Equal(["b4", "b5"], ((JsonArray)timeline["events"]!).Select(e => (string?)e!["content"]!["body"]));

        async Task<(List<string?> Bodies, string? End)> PageAsync(string from, int limit)
        {
            var page = (await http.GetFromJsonAsync<JsonObject>(
                $"_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/messages?dir=b&limit={limit}&from={Uri.EscapeDataString(from)}&to={Uri.EscapeDataString(since)}"))!;
            return ([.. ((JsonArray)page["chunk"]!).Select(e => (string?)e!["content"]!["body"])], (string?)page["end"]);
        }
        var (first, end) = await PageAsync((string)timeline["prev_batch"]!, 2);
        Assert.Equal(["b3", "b2"], first);
        Assert.Equal(["b1"], (await PageAsync(end!, 2)).Bodies);
        Assert.Equal(["b3", "b2", "b1"], (await PageAsync((string)timeline["prev_batch"]!, 10)).Bodies);
    }
}
