using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>
/// Ports for hosts whose address must be known before they start (the appservice URL a homeserver is registered with).
/// A port found free is released before the host binds it; it comes from outside the range port-0 binds draw from
/// (<see cref="RealtimeChat.Bench.LoopbackPorts"/>), and a host that still finds it taken starts again on another.
/// </summary>
public static class Ports
{
    public static int Free() => RealtimeChat.Bench.LoopbackPorts.Free();

    /// <summary>A loopback port held by a listener until it is disposed (what "taken" looks like to a host).</summary>
    public static TcpListener Occupy(out int port)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        port = ((IPEndPoint)listener.LocalEndpoint).Port;
        return listener;
    }

    /// <summary>Starts on a free port, and on another if that one was taken before the host could bind it.</summary>
    /// <param name="start">Starts everything that depends on the port; it must release what it made before it throws.</param>
    /// <param name="pick">Where the ports come from (<see cref="Free"/>).</param>
    public static async Task<T> StartOnFreePortAsync<T>(Func<int, Task<T>> start, Func<int>? pick = null)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await start((pick ?? Free)());
            }
            catch (IOException ex) when (attempt < 3 && ex.InnerException is AddressInUseException)
            {
                // Taken meanwhile: try another.
            }
        }
    }
}
