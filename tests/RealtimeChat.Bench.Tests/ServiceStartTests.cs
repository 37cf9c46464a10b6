using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using RealtimeChat.Bench;

namespace RealtimeChat.Bench.Tests;

/// <summary>The harness measures the service it started, never another server that happens to hold the port.</summary>
public sealed class ServiceStartTests
{
    [Fact]
    public async Task A_service_that_cannot_bind_its_port_fails_to_start_instead_of_another_server_answering_for_it()
    {
        // Another server already on the port, healthy on the path the harness probes (as a test host that took the port
        // between the harness finding it free and the service binding it).
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        await using var other = builder.Build();
        other.MapGet("/health/ready", () => TypedResults.Ok("Healthy"));
        await other.StartAsync();
        var port = new Uri(other.Urls.First()).Port;

        var log = new StringWriter();
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await using var service = await ChatService.StartAsync(new HarnessSettings { Log = log }, port: port);
        });
        Assert.Contains("exited", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_service_and_the_baseline_are_found_on_the_ports_they_bound()
    {
        var settings = new HarnessSettings { Log = new StringWriter() };
        await using var service = await ChatService.StartAsync(settings);
        await using var baseline = await Baseline.StartAsync(settings);
        Assert.NotEqual(0, service.BaseUrl.Port);
        Assert.NotEqual(0, baseline.BaseUrl.Port);
        using var http = new HttpClient();
        Assert.Equal("Healthy", await http.GetStringAsync(new Uri(service.BaseUrl, "/health/ready")));
        (await http.GetAsync(new Uri(baseline.BaseUrl, "/health"))).EnsureSuccessStatusCode();
    }
}

public sealed class FreePortTests
{
    [Fact]
    public void A_port_chosen_before_its_server_starts_is_one_that_port_0_binds_never_get()
    {
        // Linux hands out port-0 binds (every in-process test host) from this range only.
        var range = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var (first, last) = (int.Parse(range[0]), int.Parse(range[1]));
        for (var i = 0; i < 20; i++)
        {
            var port = LoopbackPorts.Free();
            Assert.False(port >= first && port <= last, $"port {port} is in the ephemeral range {first}-{last}");
        }
    }
}
