using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using System.Collections.Concurrent;
using System.Net.WebSockets;
using System.Threading.Channels;

namespace RealtimeChat.Bench;

/// <summary>
/// The trivial baseline every run measures next to the service, in its own process like the service: an empty
/// Kestrel endpoint, an echo WebSocket, and a broadcast endpoint that writes a posted body to every socket of a group
/// (the least work a fan-out can do). No logging, no auth, no storage.
/// </summary>
public static class BaselineServer
{
    public static async Task RunAsync(int port, CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://127.0.0.1:{port}");
        var app = builder.Build();
        app.UseWebSockets(new WebSocketOptions { KeepAliveInterval = TimeSpan.FromSeconds(20) });
        var groups = new ConcurrentDictionary<string, ConcurrentDictionary<Peer, byte>>();
        var reply = "{\"id\":\"00000000-0000-0000-0000-000000000000\",\"seq\":1}"u8.ToArray();

        app.MapGet("/health", () => Results.Ok());
        app.MapMethods("/send", ["POST", "PUT"], async (HttpContext context) =>
        {
            await DrainAsync(context.Request.Body);
            context.Response.StatusCode = 201;
            context.Response.ContentType = "application/json";
            await context.Response.Body.WriteAsync(reply);
        });
        app.MapPost("/broadcast/{group}", async (string group, HttpContext context) =>
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer);
            var frame = buffer.ToArray();
            if (groups.TryGetValue(group, out var peers))
            {
                foreach (var peer in peers.Keys)
                {
                    peer.Queue.Writer.TryWrite(frame);
                }
            }
            context.Response.StatusCode = 201;
            await context.Response.Body.WriteAsync(reply);
        });
        app.Map("/ws", async (HttpContext context) =>
        {
            if (!context.WebSockets.IsWebSocketRequest)
            {
                context.Response.StatusCode = 400;
                return;
            }
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var peer = new Peer(socket);
            var group = context.Request.Query["group"].ToString();
            var members = groups.GetOrAdd(group, _ => new());
            members[peer] = 0;
            peer.Queue.Writer.TryWrite("{\"type\":\"ready\"}"u8.ToArray());
            var writer = peer.WriteLoopAsync();
            var buffer = new byte[4096];
            try
            {
                while (true)
                {
                    var received = 0;
                    ValueWebSocketReceiveResult result;
                    do
                    {
                        if (received == buffer.Length)
                        {
                            Array.Resize(ref buffer, buffer.Length * 2);
                        }
                        result = await socket.ReceiveAsync(buffer.AsMemory(received), context.RequestAborted);
                        received += result.Count;
                    }
                    while (!result.EndOfMessage);
                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        break;
                    }
                    peer.Queue.Writer.TryWrite(buffer[..received]);
                }
            }
            catch (Exception ex) when (ex is WebSocketException or OperationCanceledException)
            {
                // peer gone
            }
            members.TryRemove(peer, out _);
            peer.Queue.Writer.TryComplete();
            await writer;
        });
        await app.StartAsync(cancellationToken);
        // The line ServerProcess waits for, as Kestrel prints it; with --port 0 it carries the port the kernel chose.
        Console.WriteLine($"Now listening on: {app.Urls.First()}");
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
        await app.StopAsync(CancellationToken.None);
    }

    private static async Task DrainAsync(Stream body)
    {
        var buffer = new byte[4096];
        while (await body.ReadAsync(buffer) > 0)
        {
        }
    }

    private sealed class Peer(WebSocket socket)
    {
        public Channel<byte[]> Queue { get; } = Channel.CreateUnbounded<byte[]>(new UnboundedChannelOptions { SingleReader = true });

        public async Task WriteLoopAsync()
        {
            try
            {
                await foreach (var frame in Queue.Reader.ReadAllAsync())
                {
                    await socket.SendAsync(frame, WebSocketMessageType.Text, true, CancellationToken.None);
                }
            }
            catch (Exception ex) when (ex is WebSocketException or ObjectDisposedException or IOException)
            {
                // peer gone
            }
        }
    }
}

/// <summary>The baseline server started as a child process of this program.</summary>
public static class Baseline
{
    public static async Task<ServerProcess> StartAsync(HarnessSettings settings)
    {
        return await ServerProcess.StartAsync("baseline", settings.BenchDll, ["baseline-server", "--port", "0"], "/health", settings.Log);
    }
}
