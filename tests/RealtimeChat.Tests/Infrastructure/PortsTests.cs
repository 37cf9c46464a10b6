namespace RealtimeChat.Tests.Infrastructure;

public sealed class PortsTests
{
    [Fact]
    public async Task A_host_whose_port_was_taken_before_it_bound_starts_again_on_another()
    {
        using var taken = Ports.Occupy(out var takenPort);
        var picks = new Queue<int>([takenPort]);
        var tried = new List<int>();

        await using var server = await Ports.StartOnFreePortAsync(
            port =>
            {
                tried.Add(port);
                return ChatServer.StartAsync(new() { ["urls"] = $"http://127.0.0.1:{port}" });
            },
            () => picks.Count > 0 ? picks.Dequeue() : Ports.Free());

        Assert.Equal(takenPort, tried[0]);
        Assert.Equal(2, tried.Count);
        Assert.Equal(tried[1], server.BaseAddress.Port);
        Assert.Equal("Healthy", await server.Client().GetStringAsync("/health/ready"));
    }
}
