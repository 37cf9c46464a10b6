using System.Text.Json.Nodes;
using Xunit;
using static MatrixEmulator.Tests.PushTranscripts;

namespace MatrixEmulator.Tests;

/// <summary>
/// Replays restart_inflight_client_server.jsonl (Synapse 1.67 restarted gracefully while a push was held by the
/// appservice and two more events were queued behind it) and restart_kill_inflight_client_server.jsonl (the same with
/// kill -9 and start); compares what reached the appservice afterwards with the matching *_appservice_push.jsonl.
/// </summary>
[Collection(TimingSensitive.Name)]
public sealed class RestartInflightGoldenTests
{
    private const double TimeScale = 0.05;
    private const long RecordedInFlightTxn = 9;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData("restart_inflight", false)]
    [InlineData("restart_kill_inflight", true)]
    public async Task A_restart_drops_the_push_in_flight_loses_what_queued_behind_it_and_resends_it_as_recorded(string recording, bool kill)
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = TimeScale,
        });
        var human = emulator.CreateUser("human", "humanpass");
        var replay = new ClientServerReplay(emulator, new IdMap());
        replay.UseToken("human", human.AccessToken);
        var pusher = emulator.Appservice;
        var receivedBeforeRestart = 0;
        var serviceUpAfterRestart = true;

        async Task BeforeStep(string step)
        {
            switch (step)
            {
                case "as_send_in_flight":
                    await pusher.WaitUntilIdleAsync(Patience);
                    appservice.DelayNext(TimeSpan.FromSeconds(30) * TimeScale * 4);
                    break;
                case "as_send_queued_1":
                    await UntilAsync(() => appservice.Received.Any(r => Bodies(r.Body).Contains("in flight")), Patience);
                    break;
                case "as_send_after_restart":
                    receivedBeforeRestart = appservice.Received.Count;
                    await emulator.RestartAsync(kill: kill);
                    serviceUpAfterRestart = pusher.ServiceUp;
                    await Task.Delay(TimeSpan.FromSeconds(3) * TimeScale);
                    break;
                case "as_send_fail":
                    await pusher.WaitUntilIdleAsync(Patience);
                    appservice.Mode = ListenerMode.Answer500;
                    break;
                case "as_send_last":
                    await UntilAsync(() => pusher.Attempts.Any(a => a.Status == 500), Patience);
                    appservice.Mode = ListenerMode.Ok;
                    await pusher.WaitUntilIdleAsync(Patience);
                    break;
            }
        }

        await replay.RunAsync(Golden.Load($"{recording}_client_server.jsonl"), BeforeStep);
        await pusher.WaitUntilIdleAsync(Patience);

        // A graceful stop failed the push in flight and marked the appservice down; a kill left it up.
        Assert.Equal(kill, serviceUpAfterRestart);
        var inFlight = pusher.Attempts.First(a => Bodies(a.Body).Contains("in flight"));
        Assert.Equal(0, inFlight.Boot);
        Assert.StartsWith(kill ? "abandoned: the homeserver was killed" : "failed: the homeserver shut down", inFlight.Error, StringComparison.Ordinal);

        // Afterwards, as recorded (ids relative to the transaction in flight). Graceful: the first event brought the
        // recoverer, which sent the failed transaction and then the new one. Kill: the new one went at once, and the
        // old one only when a later failure started the recoverer. Either way the events queued behind it never came.
        var offset = inFlight.TxnId - RecordedInFlightTxn;
        var recorded = Golden.Load($"{recording}_appservice_push.jsonl")
            .Where(r => (string)r["kind"]! == "received" && (string)r["phase"]! == "after_restart")
            .Select(r => $"{Renumber((string)r["path"]!, offset)} {Describe((JsonArray)r["events"]!)}")
            .ToList();
        var received = appservice.Received.Skip(receivedBeforeRestart).Where(r => r.Method == "PUT").ToList();
        var actual = received
            .Where((r, i) => !(r.Answered == 500 && i > 0 && received[i - 1].Answered == 500 && received[i - 1].PathAndQuery == r.PathAndQuery))
            .Select(r => $"{r.PathAndQuery[..r.PathAndQuery.IndexOf('?', StringComparison.Ordinal)]} {Describe(r.Body)}")
            .ToList();
        Assert.Equal(recorded, actual);
        Assert.DoesNotContain(pusher.Attempts, a => Bodies(a.Body).Any(b => b.StartsWith("queued", StringComparison.Ordinal)));
        Assert.Empty(pusher.PendingTxnIds);
        Assert.Empty(emulator.ServerErrors);
    }

    private static string Renumber(string path, long offset) => $"/transactions/{long.Parse(path["/transactions/".Length..]) + offset}";
}
