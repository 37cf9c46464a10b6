using System.Net.WebSockets;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Realtime;

public sealed class SessionLimitTests
{
    private const int TokenExpired = 4001;
    private const int TokenRefused = 4003;
    private const int TooManyConnections = 4029;

    [Fact]
    public async Task A_socket_closes_with_4001_when_its_token_expires()
    {
        await using var server = await ChatServer.StartAsync();
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("expiry", bob);
        var shortToken = server.TokenFor(bob, TimeSpan.FromSeconds(3));
        await using var socket = await ConnectAsync(server, shortToken);
        await server.Client(alice).SendAsync(id, "before expiry");
        await socket.WaitForAsync(f => f.Type == "message.new");

        await socket.WaitClosedAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(TokenExpired, (int?)socket.CloseStatus);
        Assert.Equal("token_expired", socket.Socket.CloseStatusDescription);

        // Counted once the server's side of the session has ended.
        for (var attempt = 0; ; attempt++)
        {
            var metrics = await server.Client().GetStringAsync("/metrics");
            if (System.Text.RegularExpressions.Regex.IsMatch(metrics, @"chat_websocket_disconnects_total\{reason=""token_expired""\} [1-9]"))
            {
                break;
            }
            Assert.True(attempt < 50, "token_expired was not counted");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task An_auth_frame_with_a_fresh_token_keeps_the_socket_past_the_first_tokens_expiry()
    {
        await using var server = await ChatServer.StartAsync();
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("refresh", bob);
        await using var socket = await ConnectAsync(server, server.TokenFor(bob, TimeSpan.FromSeconds(3)));

        await socket.SendAsync(new { type = "auth", token = server.TokenFor(bob, TimeSpan.FromHours(1)) });
        var ack = await socket.WaitForAsync(f => f.Type is "authenticated" or "error");
        Assert.Equal("authenticated", ack.Type);
        Assert.True(ack.Json.GetProperty("expires_at").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(50));

        await Task.Delay(TimeSpan.FromSeconds(5));
        Assert.Equal(WebSocketState.Open, socket.Socket.State);
        await server.Client(alice).SendAsync(id, "after the first token expired");
        var live = await socket.WaitForAsync(f => f.Type == "message.new");
        Assert.Equal("after the first token expired", live.Data.GetProperty("content").GetString());
    }

    [Fact]
    public async Task An_invalid_token_in_an_auth_frame_is_refused_and_changes_nothing()
    {
        await using var server = await ChatServer.StartAsync();
        var bob = Guid.NewGuid();
        await using var socket = await ConnectAsync(server, server.TokenFor(bob));

        foreach (var token in new[] { "not-a-jwt", ExpiredToken(bob), "" })
        {
            await socket.SendAsync(new { type = "auth", token });
            var error = await socket.WaitForAsync(f => f.Type is "error" or "authenticated");
            Assert.Equal("error", error.Type);
            Assert.Equal("invalid_token", error.Json.GetProperty("code").GetString());
        }
        await socket.SendAsync(new { type = "ping" });
        await socket.WaitForAsync(f => f.Type == "pong");
    }

    [Fact]
    public async Task An_auth_frame_with_another_users_token_ends_the_socket_with_4003()
    {
        await using var server = await ChatServer.StartAsync();
        var (bob, mallory) = (Guid.NewGuid(), Guid.NewGuid());
        await using var socket = await ConnectAsync(server, server.TokenFor(mallory));

        await socket.SendAsync(new { type = "auth", token = server.TokenFor(bob) });
        var error = await socket.WaitForAsync(f => f.Type == "error");
        Assert.Equal("token_user_mismatch", error.Json.GetProperty("code").GetString());
        await socket.WaitClosedAsync();
        Assert.Equal(TokenRefused, (int?)socket.CloseStatus);
    }

    [Fact]
    public async Task Sockets_past_the_per_user_cap_are_closed_with_4029()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Realtime:MaxConnectionsPerUser"] = "2" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var first = await server.ConnectAsync(alice);
        await using var second = await server.ConnectAsync(alice);

        await using (var third = await ConnectAsync(server, server.TokenFor(alice), waitReady: false))
        {
            await third.WaitClosedAsync();
            Assert.Equal(TooManyConnections, (int?)third.CloseStatus);
            Assert.Equal("too_many_connections", third.Socket.CloseStatusDescription);
        }

        // Other users are not affected, and a closed socket frees its slot.
        await using var bobs = await server.ConnectAsync(bob);
        await first.DisposeAsync();
        await using var again = await WaitForSlotAsync(server, alice);
        Assert.Equal(WebSocketState.Open, again.Socket.State);
    }

    private static string ExpiredToken(Guid user) =>
        new System.IdentityModel.Tokens.Jwt.JwtSecurityTokenHandler().WriteToken(new System.IdentityModel.Tokens.Jwt.JwtSecurityToken(
            claims: [new System.Security.Claims.Claim("sub", user.ToString())],
            notBefore: DateTime.UtcNow.AddMinutes(-10),
            expires: DateTime.UtcNow.AddMinutes(-5),
            signingCredentials: new Microsoft.IdentityModel.Tokens.SigningCredentials(
                new Microsoft.IdentityModel.Tokens.SymmetricSecurityKey(System.Text.Encoding.UTF8.GetBytes(ChatServer.SigningKey)),
                Microsoft.IdentityModel.Tokens.SecurityAlgorithms.HmacSha256)));

    private static async Task<LiveSocket> WaitForSlotAsync(ChatServer server, Guid user)
    {
        // The server releases the slot when its side of the closed socket has finished.
        for (var attempt = 0; ; attempt++)
        {
            var socket = await ConnectAsync(server, server.TokenFor(user), waitReady: false);
            var frame = await socket.CollectAsync(TimeSpan.FromMilliseconds(500));
            if (frame.Any(f => f.Type == "ready"))
            {
                return socket;
            }
            await socket.DisposeAsync();
            Assert.True(attempt < 20, "The closed socket's slot was never released.");
        }
    }

    private static async Task<LiveSocket> ConnectAsync(ChatServer server, string token, bool waitReady = true)
    {
        var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("Authorization", $"Bearer {token}");
        await socket.ConnectAsync(new Uri($"ws://{server.BaseAddress.Authority}/ws"), CancellationToken.None);
        var live = new LiveSocket(socket);
        if (waitReady)
        {
            await live.WaitForAsync(f => f.Type == "ready");
        }
        return live;
    }
}
