using System.Net.Sockets;
using System.Text;
using RealtimeChat.Realtime;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Realtime;

public sealed class SlowConsumerTests
{
    [Fact]
    public async Task A_client_that_stops_reading_is_disconnected_not_buffered_without_bound()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Realtime:SendQueueLimit"] = "8" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("firehose", bob);

        // A raw socket with a tiny receive window that completes the handshake and then never reads.
        using var tcp = new TcpClient { ReceiveBufferSize = 4096 };
        await tcp.ConnectAsync(server.BaseAddress.Host, server.BaseAddress.Port);
        var stream = tcp.GetStream();
        var handshake =
            $"GET /ws HTTP/1.1\r\nHost: {server.BaseAddress.Authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            $"Sec-WebSocket-Key: {Convert.ToBase64String(Guid.NewGuid().ToByteArray())}\r\nSec-WebSocket-Version: 13\r\n" +
            $"Authorization: Bearer {server.TokenFor(bob)}\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(handshake));
        var response = new byte[1024];
        var read = await stream.ReadAsync(response);
        Assert.StartsWith("HTTP/1.1 101", Encoding.ASCII.GetString(response, 0, read));

        var hub = server.Services.GetRequiredService<RealtimeHub>();
        await WaitUntilAsync(() => hub.IsConnected(bob), TimeSpan.FromSeconds(5));

        var sender = server.Client(alice);
        var body = new string('x', 16 * 1024 - 64);
        var sent = 0;
        while (hub.IsConnected(bob) && sent < 3000)
        {
            await sender.SendAsync(id, body);
            sent++;
        }

        Assert.False(hub.IsConnected(bob), $"still connected after {sent} frames of 16 KiB");
        var metrics = await server.Client().GetStringAsync("/metrics");
        Assert.Matches(@"chat_websocket_disconnects_total\{reason=""slow_consumer""\} [1-9]", metrics);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not reached in time");
            await Task.Delay(20);
        }
    }
}
