using System.IdentityModel.Tokens.Jwt;
using System.Net;
using System.Net.WebSockets;
using System.Security.Claims;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using RealtimeChat.Identity;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Realtime;

/// <summary>What a client misusing the socket (stale tokens, many sockets, floods, binary frames) can and cannot do.</summary>
public sealed class SocketAbuseTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private const int TokenExpired = 4001;
    private readonly ChatServer _server = fixture.Server;

    [Fact]
    public async Task An_auth_frame_with_a_token_that_just_expired_is_refused_and_the_socket_keeps_its_token()
    {
        var bob = Guid.NewGuid();
        await using var socket = await ConnectAsync(_server, _server.TokenFor(bob, TimeSpan.FromSeconds(120)));

        // Within the 30 s clock skew that handshakes and REST calls allow.
        await socket.SendAsync(new { type = "auth", token = TokenExpiredAgo(_server, bob, TimeSpan.FromSeconds(10)) });
        var answer = await socket.WaitForAsync(f => f.Type is "authenticated" or "error");
        Assert.Equal("error", answer.Type);
        Assert.Equal("invalid_token", answer.Json.GetProperty("code").GetString());

        Assert.DoesNotContain(await socket.CollectAsync(TimeSpan.FromSeconds(1)), f => f.Type == "authenticated");
        Assert.Equal(WebSocketState.Open, socket.Socket.State);
        await socket.SendAsync(new { type = "ping" });
        await socket.WaitForAsync(f => f.Type == "pong");
        Assert.NotEqual(TokenExpired, (int?)socket.CloseStatus);
    }

    [Fact]
    public async Task A_binary_frame_closes_the_socket_with_1003()
    {
        await using var socket = await _server.ConnectAsync(Guid.NewGuid());

        await socket.Socket.SendAsync(Encoding.UTF8.GetBytes("""{"type":"ping"}"""), WebSocketMessageType.Binary, true, CancellationToken.None);

        await socket.WaitClosedAsync();
        Assert.Equal(WebSocketCloseStatus.InvalidMessageType, socket.CloseStatus);
        Assert.Equal("binary_frame", socket.Socket.CloseStatusDescription);
        Assert.DoesNotContain(await socket.CollectAsync(TimeSpan.FromMilliseconds(100)), f => f.Type == "pong");
    }

    /// <summary>A token for <paramref name="user"/> whose <c>exp</c> passed <paramref name="ago"/> ago.</summary>
    private static string TokenExpiredAgo(ChatServer server, Guid user, TimeSpan ago)
    {
        var auth = server.Services.GetRequiredService<IOptions<AuthOptions>>().Value;
        var now = DateTime.UtcNow;
        return new JwtSecurityTokenHandler().WriteToken(new JwtSecurityToken(
            issuer: auth.Issuer,
            audience: auth.Audience,
            claims: [new Claim("sub", user.ToString())],
            notBefore: now - ago - TimeSpan.FromMinutes(2),
            expires: now - ago,
            signingCredentials: new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(ChatServer.SigningKey)), SecurityAlgorithms.HmacSha256)));
    }

    private static async Task<LiveSocket> ConnectAsync(ChatServer server, string token)
    {
        var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("Authorization", $"Bearer {token}");
        await socket.ConnectAsync(new Uri($"ws://{server.BaseAddress.Authority}/ws"), CancellationToken.None);
        var live = new LiveSocket(socket);
        await live.WaitForAsync(f => f.Type == "ready");
        return live;
    }
}
