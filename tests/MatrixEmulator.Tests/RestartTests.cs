using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xunit;
using static MatrixEmulator.Tests.PushTranscripts;

namespace MatrixEmulator.Tests;

/// <summary>What a restart keeps and loses, beyond what restart_client_server.jsonl recorded.</summary>
[Collection(TimingSensitive.Name)]
public sealed class RestartTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task While_down_connections_are_refused_and_a_restart_keeps_port_store_tokens_and_sync_positions()
    {
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions { TimeScale = 0.01 });
        var alice = emulator.CreateUser("alice");
        var bob = emulator.CreateUser("bob");
        var roomId = await alice.CreateRoomAsync("chat", bob.UserId);
        await bob.JoinAsync(roomId);
        bob.SendText(roomId, "before");
        var mxc = alice.Upload([1, 2, 3], "audio/ogg", "a.ogg");
        bob.SetTyping(roomId, true);
        bob.SetTyping(roomId, false);
        bob.SetTyping(roomId, true);
        bob.SetTyping(roomId, false);
        using var http = alice.CreateHttpClient();
        var since = (string)(await http.GetFromJsonAsync<JsonObject>("_matrix/client/v3/sync?timeout=0"))!["next_batch"]!;
        var baseUrl = emulator.BaseUrl;

        // A long-poll in progress loses its connection.
        var poll = http.GetAsync($"_matrix/client/v3/sync?timeout=10000&since={since}");
        await Task.Delay(100);
        await emulator.ShutDownAsync();
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => poll);

        Assert.False(emulator.IsRunning);
        var refused = await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync("_matrix/client/v3/account/whoami"));
        Assert.Equal(SocketError.ConnectionRefused, Assert.IsType<SocketException>(refused.InnerException).SocketErrorCode);
        Assert.Throws<HttpRequestException>(() => bob.SendText(roomId, "while down"));

        await emulator.StartAgainAsync();
        Assert.True(emulator.IsRunning);
        Assert.Equal(baseUrl, emulator.BaseUrl);
        Assert.Equal(1, emulator.Restarts);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("_matrix/client/v3/account/whoami")).StatusCode);
        var media = await http.GetAsync($"_matrix/media/v3/download/{mxc["mxc://".Length..]}");
        Assert.Equal([1, 2, 3], await media.Content.ReadAsByteArrayAsync());

        // The token from before the restart still works as a since: the sync returns only what came after it.
        var after = bob.SendText(roomId, "after");
        var sync = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?timeout=0&since={since}"))!;
        var timeline = (JsonArray)sync["rooms"]!["join"]![roomId]!["timeline"]!["events"]!;
        Assert.Equal([after], timeline.Select(e => (string?)e!["event_id"]));
        Assert.Equal(["before", "after"], emulator.Timeline(roomId).Where(e => e.Type == "m.room.message").Select(e => e.Body));
        Assert.Equal(2, emulator.CountEvents(roomId, bob.UserId, "m.room.message"));

        // Typing lives in memory: its stream restarted from 0, so the old token hides the first new typing notice.
        bob.SetTyping(roomId, true);
        var fromOld = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?timeout=0&since={since}"))!;
        Assert.Empty((JsonArray)fromOld["rooms"]!["join"]![roomId]!["ephemeral"]!["events"]!);
        bob.SetTyping(roomId, false);
        bob.SetTyping(roomId, true);
        var fromNew = (await http.GetFromJsonAsync<JsonObject>($"_matrix/client/v3/sync?timeout=0&since={fromOld["next_batch"]}"))!;
        var typing = Assert.Single((JsonArray)fromNew["rooms"]!["join"]![roomId]!["ephemeral"]!["events"]!)!;
        Assert.Equal([bob.UserId], ((JsonArray)typing["content"]!["user_ids"]!).Select(u => (string?)u));
        Assert.Empty(emulator.ServerErrors);
    }

    [Fact]
    public async Task A_push_in_flight_when_the_homeserver_is_killed_stays_pending_until_a_later_failure_and_ids_go_on_past_it()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = 0.01,
        });
        var ghost = await RegisterGhostAsync(emulator, "nova_ghost");
        var roomId = await ghost.CreateRoomAsync("bridged");
        var pusher = emulator.Appservice;
        await pusher.WaitUntilIdleAsync(Patience);

        // The appservice holds the next push; meanwhile another event queues behind it.
        appservice.DelayNext(TimeSpan.FromSeconds(3));
        var inFlight = ghost.SendText(roomId, "in flight");
        await UntilAsync(() => appservice.Received.Any(r => Bodies(r.Body).Contains("in flight")), Patience);
        var queued = ghost.SendText(roomId, "queued behind");

        await emulator.RestartAsync(kill: true);

        var abandoned = pusher.Attempts.Single(a => a.EventIds.Contains(inFlight));
        Assert.Equal(0, abandoned.Boot);
        Assert.StartsWith("abandoned", abandoned.Error, StringComparison.Ordinal);
        Assert.Equal([abandoned.TxnId], pusher.PendingTxnIds);
        Assert.True(pusher.ServiceUp);

        // Still up (a kill left no time to mark it down), so the pending transaction is not retried; the next one
        // takes the id after it. RestartInflightGoldenTests covers the graceful restart, which marks it down.
        var next = ghost.SendText(roomId, "next");
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(next) && x.Succeeded), Patience);
        await pusher.WaitUntilIdleAsync(Patience);
        var afterRestart = pusher.Attempts.Where(a => a.Boot == 1).ToList();
        Assert.Equal([abandoned.TxnId + 1], afterRestart.Select(a => a.TxnId));
        Assert.Equal([abandoned.TxnId], pusher.PendingTxnIds);

        // Only a later failure starts the recoverer, which sends the oldest pending transaction first.
        appservice.Mode = ListenerMode.Answer500;
        var failing = ghost.SendText(roomId, "failing");
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(failing)), Patience);
        appservice.Mode = ListenerMode.Ok;
        await pusher.WaitUntilIdleAsync(Patience);
        var delivered = pusher.Attempts.Where(a => a.Boot == 1 && a.Succeeded).Select(a => a.TxnId).ToList();
        Assert.Equal([abandoned.TxnId + 1, abandoned.TxnId, abandoned.TxnId + 2], delivered);
        Assert.Empty(pusher.PendingTxnIds);

        // What queued behind the abandoned push was lost with the process's memory, as in Synapse.
        Assert.DoesNotContain(pusher.Attempts, a => a.EventIds.Contains(queued));
        Assert.Empty(emulator.ServerErrors);
    }

    [Fact]
    public async Task Down_fault_and_shutdown_are_different_outages()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = 0.01,
        });
        var ghost = await RegisterGhostAsync(emulator, "nova_ghost");
        var roomId = await ghost.CreateRoomAsync("bridged");
        var pusher = emulator.Appservice;
        await pusher.WaitUntilIdleAsync(Patience);
        using var http = ghost.CreateHttpClient();

        // Fault.Down: connections are accepted then dropped, pushes wait, in-process users still act.
        using (emulator.Faults.Inject(Fault.Down()))
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync("_matrix/client/v3/joined_rooms"));
            ghost.SendText(roomId, "held");
            await Task.Delay(100);
            Assert.DoesNotContain(pusher.Attempts, a => Bodies(a.Body).Contains("held"));
        }

        await pusher.WaitForAsync(a => a.Any(x => Bodies(x.Body).Contains("held") && x.Succeeded), Patience);
        Assert.Equal(0, emulator.Restarts);
    }

    [Fact]
    public async Task The_send_txn_cache_forgets_after_its_lifetime_but_a_users_txn_ids_are_persisted()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            SendTxnCacheLifetime = TimeSpan.FromMilliseconds(200),
        });
        var ghost = await RegisterGhostAsync(emulator, "nova_ghost");
        var human = emulator.CreateUser("human");
        var roomId = await ghost.CreateRoomAsync("chat", human.UserId);
        await human.JoinAsync(roomId);
        using var asHttp = new HttpClient { BaseAddress = emulator.BaseUrl };
        asHttp.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", emulator.Options.Appservice!.AsToken);
        using var humanHttp = human.CreateHttpClient();

        async Task<string> SendAsync(HttpClient http, string query) =>
            (string)(await (await http.PutAsJsonAsync($"_matrix/client/v3/rooms/{roomId}/send/m.room.message/t1{query}", new { msgtype = "m.text", body = "once" }))
                .Content.ReadFromJsonAsync<JsonObject>())!["event_id"]!;

        var asFirst = await SendAsync(asHttp, "?user_id=%40nova_ghost%3Alocalhost");
        var humanFirst = await SendAsync(humanHttp, "");
        Assert.Equal(asFirst, await SendAsync(asHttp, "?user_id=%40nova_ghost%3Alocalhost"));
        await Task.Delay(300);
        Assert.NotEqual(asFirst, await SendAsync(asHttp, "?user_id=%40nova_ghost%3Alocalhost"));
        Assert.Equal(humanFirst, await SendAsync(humanHttp, ""));
        Assert.Equal(2, emulator.CountEvents(roomId, ghost.UserId, "m.room.message"));
        Assert.Equal(1, emulator.CountEvents(roomId, human.UserId, "m.room.message"));
    }
}
