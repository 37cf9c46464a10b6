using Xunit;

namespace MatrixEmulator.Tests;

public sealed class ClientServerGoldenTests
{
    [Fact]
    public async Task Replaying_client_server_recording_gives_Synapse_answers()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions { Appservice = AppserviceRegistration.NovaChat(appservice.Url) });
        emulator.CreateUser("nova-service", "servicepass");
        emulator.CreateUser("human", "humanpass");

        var steps = Golden.Load("client_server.jsonl");
        await new ClientServerReplay(emulator, new IdMap()).RunAsync(steps);

        Assert.Equal(45, steps.Count);
        var ghostA = "@nova_627fd26afa7c4a269645a79651351db2:localhost";
        var sent = emulator.EventsSentBy(ghostA).Where(e => e.Type == "m.room.message").ToList();
        Assert.Equal(["hello from nova", "* hello edited", "voice.webm", null], sent.Select(e => e.Body));
        Assert.Equal("to be deleted", (string?)sent[3].OriginalContent["body"]);
        Assert.DoesNotContain(emulator.EventsSentBy("@nova_cac14feb913748fda6d6976079a4e143:localhost"), e => e.Type == "m.room.message");
    }

    [Fact]
    public async Task Replaying_faults_recording_gives_Synapse_answers()
    {
        await using var appservice = await AppserviceListener.StartAsync();
        await using var emulator = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(appservice.Url),
            MessageRateLimit = new RateLimit(0.5, 5),
        });
        emulator.CreateUser("human", "humanpass");

        // The recording's phases were a minute apart, long enough for the human's rate-limit bucket to drain; only
        // the flood was sent in one go.
        Task BeforeStep(string step)
        {
            if (!step.StartsWith("human_flood_", StringComparison.Ordinal) || step == "human_flood_0")
            {
                emulator.ResetRateLimits();
            }

            return Task.CompletedTask;
        }

        await new ClientServerReplay(emulator, new IdMap()).RunAsync(Golden.Load("faults_client_server.jsonl"), BeforeStep);

        var queries = emulator.Appservice.Queries;
        Assert.Equal(
            [("users", "@nova_0049a96a0037413db5df2ddbccad0f50:localhost"), ("rooms", "#nova_missing:localhost")],
            queries.Select(q => (q.Kind, q.Subject)));
        Assert.Equal(
            ["/users/%40nova_0049a96a0037413db5df2ddbccad0f50%3Alocalhost?access_token=<hs_token>", "/rooms/%23nova_missing%3Alocalhost?access_token=<hs_token>"],
            appservice.Received.Where(r => r.Method == "GET").Select(r => r.PathAndQuery.Replace("hs_token_test_0123456789", "<hs_token>")));
        Assert.All(queries, q => Assert.Null(q.Authorization));
    }
}
