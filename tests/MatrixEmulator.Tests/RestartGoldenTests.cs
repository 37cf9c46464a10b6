using System.Text.Json.Nodes;
using Xunit;
using static MatrixEmulator.Tests.PushTranscripts;

namespace MatrixEmulator.Tests;

/// <summary>
/// Replays restart_client_server.jsonl (Synapse 1.67 restarted twice with its SQLite store) and checks the answers,
/// including the ones that only make sense across a restart, and what reached the appservice against
/// restart_appservice_push.jsonl.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed class RestartGoldenTests
{
    private const string GhostA = "@nova_a:localhost";
    private const double TimeScale = 0.05;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Replaying_restart_recording_gives_Synapse_answers_and_pushes()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = TimeScale,
            ScaleAppserviceRequestTimeout = true,
        });
        var human = emulator.CreateUser("human", "humanpass");
        var replay = new ClientServerReplay(emulator, new IdMap());
        replay.UseToken("human", human.AccessToken);
        var pusher = emulator.Appservice;
        var baseUrl = emulator.BaseUrl;
        var receivedBeforeRestart = 0;
        var idleWindowAttempts = -1;

        async Task BeforeStep(string step)
        {
            switch (step)
            {
                case "as_txn_after_restart":
                    await pusher.WaitUntilIdleAsync(Patience);
                    receivedBeforeRestart = appservice.Received.Count;
                    await emulator.RestartAsync();
                    break;
                case "as_send_while_failing":
                    await pusher.WaitUntilIdleAsync(Patience);
                    appservice.Mode = ListenerMode.Answer500;
                    break;
                case "as_send_after_restart2":
                    // Restarted while transaction 2 had failed and waited for the recoverer; the appservice then recovered.
                    await UntilAsync(() => pusher.Attempts.Any(a => a.Status == 500), Patience);
                    await emulator.RestartAsync();
                    appservice.Mode = ListenerMode.Ok;
                    var before = pusher.Attempts.Count;
                    await Task.Delay(TimeSpan.FromSeconds(4) * TimeScale);
                    idleWindowAttempts = pusher.Attempts.Count - before;
                    break;
                case "as_send_slow":
                    await pusher.WaitUntilIdleAsync(Patience);
                    appservice.DelayNext(emulator.Options.AppserviceRequestTimeout * TimeScale * 2);
                    break;
                case "as_send_final":
                    await pusher.WaitUntilIdleAsync(Patience);
                    await UntilAsync(() => appservice.Received.All(r => r.FinishedAt is not null), Patience);
                    break;
            }
        }

        var steps = Golden.Load("restart_client_server.jsonl");
        await replay.RunAsync(steps, BeforeStep);
        await pusher.WaitUntilIdleAsync(Patience);

        Assert.Equal(baseUrl, emulator.BaseUrl);
        Assert.Equal(2, emulator.Restarts);
        Assert.Empty(emulator.ServerErrors);
        var roomId = emulator.Rooms.Single().RoomId;
        var messages = emulator.Timeline(roomId).Where(e => e.Type == "m.room.message").ToList();

        // The appservice's txnId was forgotten by the restart (a second event); the user's was persisted (one event).
        Assert.Equal(2, messages.Count(e => e.Sender == GhostA && e.Body == "dup as"));
        Assert.Single(messages, e => e.Body == "dup human");

        // ?ts= counts for the appservice's /send (PUT and POST) only: not for a user, a state event or a redaction.
        Assert.Equal(1234567890123, messages.Single(e => e.Body == "with ts").OriginServerTs);
        Assert.Equal(1234567890124, messages.Single(e => e.Body == "post with ts").OriginServerTs);
        Assert.NotEqual(1234567890123, messages.Single(e => e.Body == "human with ts").OriginServerTs);
        Assert.NotEqual(1234567890123, emulator.Timeline(roomId).Single(e => e.Type == "m.room.topic").OriginServerTs);
        Assert.NotEqual(1234567890123, emulator.Timeline(roomId).Single(e => e.Type == "m.room.redaction").OriginServerTs);
        Assert.Equal(1, emulator.CountEvents(roomId, human.UserId, "m.reaction"));

        // After the first restart the transactions counted from 1 again. After the second, transaction 2 (failed and
        // pending) waited for the next event; then the recoverer re-sent it and the new event went as 3.
        Assert.Equal(0, idleWindowAttempts);
        var recorded = Golden.Load("restart_appservice_push.jsonl")
            .Where(r => (string)r["kind"]! == "received" && (string)r["phase"]! != "before_restart_1")
            .Select(r => $"{r["path"]} {Describe((JsonArray)r["events"]!)}")
            .ToList();
        var received = appservice.Received.Skip(receivedBeforeRestart).Where(r => r.Method == "PUT").ToList();
        var actual = received
            .Where((r, i) => !(r.Answered == 500 && i > 0 && received[i - 1].Answered == 500 && received[i - 1].PathAndQuery == r.PathAndQuery))
            .Select(r => $"{r.PathAndQuery[..r.PathAndQuery.IndexOf('?', StringComparison.Ordinal)]} {Describe(r.Body)}")
            .ToList();
        Assert.Equal(recorded, actual);
        Assert.Equal([1, 2], pusher.Attempts.Where(a => a.Boot == 1).Select(a => a.TxnId).Distinct());
        Assert.Equal([2, 3, 4, 5], pusher.Attempts.Where(a => a.Boot == 2).Select(a => a.TxnId).Distinct());

        // So a transaction id comes back with other events: only event ids are unique over time.
        Assert.NotEqual(
            pusher.Attempts.First(a => a.Boot == 0 && a.TxnId == 3).EventIds,
            pusher.Attempts.First(a => a.Boot == 2 && a.TxnId == 3).EventIds);

        // The push that outlived the timeout was sent again, same id and events, while the appservice still handled the first.
        var slow = pusher.Attempts.Where(a => a.Boot == 2 && a.TxnId == 4).ToList();
        Assert.Equal(2, slow.Count);
        Assert.False(slow[0].Succeeded);
        Assert.True(slow[1].Succeeded);
        Assert.Equal(slow[0].EventIds, slow[1].EventIds);
        var slowReceived = received.Where(r => r.PathAndQuery.StartsWith("/transactions/4?", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, slowReceived.Count);
        Assert.True(slowReceived[1].At < slowReceived[0].FinishedAt, "the retry should overlap the first attempt");
    }
}
