using System.Text.Json.Nodes;
using Xunit;
using static MatrixEmulator.Tests.PushTranscripts;

namespace MatrixEmulator.Tests;

/// <summary>What Synapse 1.67's recoverer does not carry, read from synapse/appservice/scheduler.py and storage.</summary>
[Collection(TimingSensitive.Name)]
public sealed class AppserviceRecoveryTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Ephemeral_events_are_dropped_while_the_appservice_is_down_and_missing_from_retries()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url) with { ReceiveEphemeral = true },
            TimeScale = 0.02,
        });
        var (human, roomId) = await HumanInABridgedRoomAsync(emulator);
        var pusher = emulator.Appservice;

        // The message's push fails; typing while the appservice is down goes nowhere, and the retry carries no ephemeral.
        appservice.Mode = ListenerMode.Answer500;
        var message = human.SendText(roomId, "while failing");
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(message)), Patience);
        Assert.False(pusher.ServiceUp);
        human.SetTyping(roomId, true);
        appservice.Mode = ListenerMode.Ok;
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(message) && x.Succeeded), Patience);
        await pusher.WaitUntilIdleAsync(Patience);
        Assert.True(pusher.ServiceUp);
        var retry = pusher.Attempts.Single(a => a.EventIds.Contains(message) && a.Succeeded);
        Assert.Empty((JsonArray)retry.Body["de.sorunome.msc2409.ephemeral"]!);
        Assert.DoesNotContain(pusher.Attempts, a => Ephemeral(a).Any());

        // Once it is up again, typing is pushed.
        human.SetTyping(roomId, false);
        await pusher.WaitForAsync(a => a.Any(x => Ephemeral(x).Any()), Patience);
    }

    [Fact]
    public async Task A_stranded_transaction_is_skipped_by_later_pushes_until_a_failure_lets_the_recoverer_send_it_first()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            TimeScale = 0.02,
        });
        var (human, roomId) = await HumanInABridgedRoomAsync(emulator);
        var pusher = emulator.Appservice;

        pusher.StrandNextTransaction();
        var stranded = human.SendText(roomId, "stranded");
        await UntilAsync(() => pusher.PendingTxnIds.Count == 1, Patience);
        var strandedTxn = pusher.PendingTxnIds[0];
        var later = human.SendText(roomId, "later");
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(later) && x.Succeeded), Patience);
        await pusher.WaitUntilIdleAsync(Patience);

        // The appservice saw the next id and never the stranded one; the homeserver still holds it and thinks all is well.
        Assert.Equal(strandedTxn + 1, pusher.Attempts.Single(a => a.EventIds.Contains(later)).TxnId);
        Assert.DoesNotContain(pusher.Attempts, a => a.EventIds.Contains(stranded));
        Assert.Equal([strandedTxn], pusher.PendingTxnIds);
        Assert.True(pusher.ServiceUp);

        // A failed push starts a recoverer, which sends the oldest unsent transaction first, then the failed one.
        appservice.Mode = ListenerMode.Answer500;
        var failing = human.SendText(roomId, "failing");
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(failing)), Patience);
        appservice.Mode = ListenerMode.Ok;
        await pusher.WaitForAsync(a => a.Any(x => x.EventIds.Contains(failing) && x.Succeeded), Patience);
        await pusher.WaitUntilIdleAsync(Patience);
        var delivered = pusher.Attempts.Where(a => a.Succeeded && a.TxnId >= strandedTxn).Select(a => a.TxnId).ToList();
        Assert.Equal([strandedTxn + 1, strandedTxn, strandedTxn + 2], delivered);
        Assert.Contains(stranded, pusher.Attempts.Single(a => a.TxnId == strandedTxn).EventIds);
        Assert.Empty(pusher.PendingTxnIds);
        Assert.Empty(emulator.ServerErrors);
    }

    private static async Task<(MatrixUser Human, string RoomId)> HumanInABridgedRoomAsync(HomeserverEmulator emulator)
    {
        var ghost = await RegisterGhostAsync(emulator, "nova_ghost");
        var human = emulator.CreateUser("human");
        var roomId = await ghost.CreateRoomAsync("chat", human.UserId);
        await human.JoinAsync(roomId);
        await emulator.Appservice.WaitUntilIdleAsync(Patience);
        return (human, roomId);
    }

    private static IEnumerable<JsonNode?> Ephemeral(PushAttempt attempt) => attempt.Body["de.sorunome.msc2409.ephemeral"] as JsonArray ?? [];
}
