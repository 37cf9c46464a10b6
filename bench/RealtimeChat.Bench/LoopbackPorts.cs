using System.Net;
using System.Net.Sockets;

namespace RealtimeChat.Bench;

/// <summary>
/// Free loopback ports for servers whose address must be known before they start (the appservice URL Synapse is
/// registered with, Synapse's own port). Such a port is released before its server binds it, so it is taken from below
/// the kernel's ephemeral range: every port another process gets by binding port 0 (the test suite's hosts) comes from
/// that range, so none of them can take it meanwhile. Also compiled into the test suite.
/// </summary>
public static class LoopbackPorts
{
    public static int Free()
    {
        if (EphemeralRangeStart() is { } start && start > 11_000)
        {
            for (var attempt = 0; attempt < 100; attempt++)
            {
                var port = Random.Shared.Next(10_000, start);
                try
                {
                    using var candidate = new TcpListener(IPAddress.Loopback, port);
                    candidate.Start();
                    return port;
                }
                catch (SocketException)
                {
                    // In use: another.
                }
            }
        }
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static int? EphemeralRangeStart()
    {
        const string range = "/proc/sys/net/ipv4/ip_local_port_range";
        return File.Exists(range) && int.TryParse(File.ReadAllText(range).Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[0], out var start)
            ? start
            : null;
    }
}
