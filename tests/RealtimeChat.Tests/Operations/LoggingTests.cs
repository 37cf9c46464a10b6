using System.Net;
using System.Text.RegularExpressions;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

/// <summary>The service's console output, as its own process.</summary>
public sealed partial class LoggingTests
{
    [Fact]
    public async Task By_default_requests_and_refusals_write_no_log_lines_and_every_line_has_a_timestamp()
    {
        await using var service = await ServiceProcess.StartAsync("--urls=http://127.0.0.1:0", "--Messages:SendsPerSecond=1", "--Messages:SendBurst=1");
        var client = await ClientAsync(service);
        var id = await client.CreateGroupAsync("quiet");
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 30; i++)
        {
            statuses.Add((await client.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = $"flood {i}" })).StatusCode);
            statuses.Add((await client.GetAsync($"/api/v1/conversations/{Guid.NewGuid()}")).StatusCode);
        }
        Assert.Contains(HttpStatusCode.TooManyRequests, statuses);
        Assert.Contains(HttpStatusCode.NotFound, statuses);
        await Task.Delay(TimeSpan.FromSeconds(1));

        var lines = service.Lines;
        Assert.DoesNotContain(lines, l => l.Contains("/api/v1", StringComparison.Ordinal));
        // A status as request lines print it: a bare "429" also matches a port or a timestamp's milliseconds (it did, once).
        Assert.DoesNotContain(lines, l => l.Contains(" 429 ", StringComparison.Ordinal) || l.Contains("rate limit", StringComparison.OrdinalIgnoreCase) || l.Contains("RateLimit", StringComparison.Ordinal));
        var entries = lines.Where(l => LevelPrefix().IsMatch(l)).ToList();
        Assert.NotEmpty(entries);
        Assert.All(entries, l => Assert.Matches(Timestamped(), l));
    }

    [Fact]
    public async Task With_Logging_Requests_each_request_is_one_line_and_refusals_are_only_counted()
    {
        await using var service = await ServiceProcess.StartAsync(
            "--urls=http://127.0.0.1:0", "--Logging:Requests=true", "--Messages:SendsPerSecond=1", "--Messages:SendBurst=1");
        var client = await ClientAsync(service);
        var id = await client.CreateGroupAsync("loud");
        var accepted = 1;
        var refused = 0;
        for (var i = 0; i < 10; i++)
        {
            var status = (await client.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = $"flood {i}" })).StatusCode;
            _ = status == HttpStatusCode.TooManyRequests ? refused++ : accepted++;
        }
        Assert.True(refused > 0);
        // Browsers put the token in the query (media, /ws): the line has the path only.
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync($"/api/v1/conversations/{id}/messages?limit=3&access_token=query-secret")).StatusCode);

        var sends = $"POST /api/v1/conversations/{id}/messages";
        await service.WaitForLineAsync(l => l.Contains("POST /api/v1/conversations ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        for (var attempt = 0; service.Lines.Count(l => l.Contains(sends, StringComparison.Ordinal)) < accepted - 1 && attempt < 50; attempt++)
        {
            await Task.Delay(100);
        }
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        var requestLines = service.Lines.Where(l => l.Contains(sends, StringComparison.Ordinal)).ToList();
        Assert.Equal(accepted - 1, requestLines.Count);
        Assert.All(requestLines, l => Assert.Contains(" 201 ", l));
        Assert.DoesNotContain(service.Lines, l => l.Contains(" 429 ", StringComparison.Ordinal));
        Assert.Contains(service.Lines, l => l.Contains($"GET /api/v1/conversations/{id}/messages 200", StringComparison.Ordinal));
        Assert.DoesNotContain(service.Lines, l => l.Contains("query-secret", StringComparison.Ordinal));
    }

    [Fact]
    public async Task By_default_the_bridge_s_requests_to_the_homeserver_write_no_log_lines()
    {
        await using var homeserver = await MatrixEmulator.HomeserverEmulator.StartAsync(new MatrixEmulator.EmulatorOptions
        {
            Appservice = MatrixEmulator.AppserviceRegistration.NovaChat(new Uri("http://127.0.0.1:9")),
        });
        var registration = homeserver.Options.Appservice!;
        await using var service = await ServiceProcess.StartAsync(
            "--urls=http://127.0.0.1:0", "--Matrix:Enabled=true", "--Matrix:Mode=Appservice", $"--Matrix:HomeserverUrl={homeserver.BaseUrl}",
            $"--Matrix:ServerName={homeserver.ServerName}", "--Matrix:AppserviceUrl=http://127.0.0.1:9",
            $"--Matrix:AsToken={registration.AsToken}", $"--Matrix:HsToken={registration.HsToken}");
        var client = await ClientAsync(service);
        var id = await client.CreateGroupAsync("bridged quietly");
        await client.SendAsync(id, "to matrix");
        await Eventually.Async(() => homeserver.Requests.Count("/send/") > 0 ? "" : null, "the message sent to the homeserver");
        await Task.Delay(TimeSpan.FromMilliseconds(500));

        // HttpClient's own lines (four per request at Information) would be most of a bridge's log.
        Assert.DoesNotContain(service.Lines, l => l.Contains("System.Net.Http.HttpClient", StringComparison.Ordinal));
    }

    private static async Task<HttpClient> ClientAsync(ServiceProcess service) => ServiceProcess.Client(await service.WaitListeningAsync(), Guid.NewGuid());

    // The simple console formatter's first line of an entry: "<timestamp> info: Category[id]".
    [GeneratedRegex(@"(^|\s)(trce|dbug|info|warn|fail|crit): ")]
    private static partial Regex LevelPrefix();

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (trce|dbug|info|warn|fail|crit): ")]
    private static partial Regex Timestamped();
}
