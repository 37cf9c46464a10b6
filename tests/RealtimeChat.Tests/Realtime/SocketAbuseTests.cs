using System.IdentityModel.Tokens.Jwt;
using System.Net;
using System.Net.WebSockets;
using System.Security.Claims;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using RealtimeChat.Identity;
using RealtimeChat.Realtime;
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
    public async Task Typing_from_many_sockets_of_one_user_reaches_the_others_once_per_interval()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Realtime:TypingThrottle"] = "00:00:30" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("typing flood", bob);
        var other = await server.Client(alice).CreateGroupAsync("elsewhere", bob);
        await using var bobSocket = await server.ConnectAsync(bob);

        var sockets = new List<LiveSocket>();
        try
        {
            for (var i = 0; i < 15; i++)
            {
                sockets.Add(await server.ConnectAsync(alice));
            }
            await Task.WhenAll(sockets.Select(async socket =>
            {
                for (var n = 0; n < 5; n++)
                {
                    await socket.SendAsync(new { type = "typing", conversation_id = id });
                }
            }));
            // Each socket's typing frames are handled before its ping, so every one has been seen after the pongs.
            foreach (var socket in sockets)
            {
                await socket.SendAsync(new { type = "ping" });
                await socket.WaitForAsync(f => f.Type == "pong");
            }
            var relayed = (await bobSocket.CollectAsync(TimeSpan.FromSeconds(1))).Where(f => f.Type == "typing").ToList();
            var notice = Assert.Single(relayed);
            Assert.Equal(id, notice.ConversationId);
            Assert.Equal(alice, notice.Json.GetProperty("user_id").GetGuid());

            // The throttle is per conversation: another one is not held back.
            await sockets[0].SendAsync(new { type = "typing", conversation_id = other });
            Assert.Equal(other, (await bobSocket.WaitForAsync(f => f.Type == "typing")).ConversationId);
        }
        finally
        {
            foreach (var socket in sockets)
            {
                await socket.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Typing_from_sockets_opened_and_closed_one_after_another_reaches_the_others_once_per_interval()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Realtime:TypingThrottle"] = "00:00:30" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("typing cycles", bob);
        await using var bobSocket = await server.ConnectAsync(bob);

        for (var i = 0; i < 30; i++)
        {
            await using var socket = await server.ConnectAsync(alice);
            await socket.SendAsync(new { type = "typing", conversation_id = id });
            await socket.SendAsync(new { type = "ping" });
            await socket.WaitForAsync(f => f.Type == "pong");
        }

        var relayed = (await bobSocket.CollectAsync(TimeSpan.FromSeconds(1.5))).Where(f => f.Type == "typing").ToList();
        Assert.Single(relayed);
    }

    [Fact]
    public void The_typing_throttle_forgets_what_can_no_longer_hold_a_notice_back()
    {
        var time = new ManualTime();
        var throttle = new TypingThrottle(time, Options.Create(new RealtimeOptions { TypingThrottle = TimeSpan.FromSeconds(2) }));
        var (alice, conversation) = (Guid.NewGuid(), Guid.NewGuid());

        time.Advance(TimeSpan.FromSeconds(1.5));
        Assert.True(throttle.TryPass(alice, conversation));
        Assert.True(throttle.TryPass(alice, Guid.NewGuid()));
        Assert.True(throttle.TryPass(Guid.NewGuid(), conversation));
        // A new generation has started since: the notice is still held back until its interval is over.
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(throttle.TryPass(alice, conversation));
        time.Advance(TimeSpan.FromSeconds(0.9));
        Assert.False(throttle.TryPass(alice, conversation));
        time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.True(throttle.TryPass(alice, conversation));

        for (var i = 0; i < 10_000; i++)
        {
            throttle.TryPass(Guid.NewGuid(), conversation);
        }
        Assert.True(throttle.Count > 10_000);
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.True(throttle.TryPass(alice, conversation));
        Assert.Equal(1, throttle.Count);
    }

    [Fact]
    public async Task Resume_frames_draw_on_the_users_reads_budget()
    {
        // One token back every 1,000 s: nothing refills during the test.
        await using var server = await ChatServer.StartAsync(new()
        {
            ["RateLimits:Reads:Burst"] = "5",
            ["RateLimits:Reads:PerSecond"] = "0.001",
        });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("resume flood", bob);
        await server.Client(alice).SendAsync(id, "one");
        await using var socket = await server.ConnectAsync(bob); // the connect takes one of the five

        for (var i = 0; i < 10; i++)
        {
            await socket.SendAsync(new { type = "resume", conversations = new Dictionary<Guid, long> { [id] = 0 } });
        }
        var answers = new List<LiveFrame>();
        while (answers.Count < 10)
        {
            answers.Add(await socket.WaitForAsync(f => f.Type is "resumed" or "resync" or "error"));
        }

        Assert.Equal(4, answers.Count(f => f.Type == "resumed"));
        var refused = answers.Where(f => f.Type == "error").ToList();
        Assert.Equal(6, refused.Count);
        Assert.All(refused, f =>
        {
            Assert.Equal("rate_limited", f.Json.GetProperty("code").GetString());
            Assert.True(f.Json.GetProperty("retry_after_ms").GetInt64() > 0);
        });
        // The same budget as REST reads: it is spent now.
        var list = await server.Client(bob).GetAsync("/api/v1/conversations");
        Assert.Equal(HttpStatusCode.TooManyRequests, list.StatusCode);

        // The socket carries on.
        await socket.SendAsync(new { type = "ping" });
        await socket.WaitForAsync(f => f.Type == "pong");
    }

    [Fact]
    public async Task A_resume_of_many_conversations_costs_a_unit_per_hundred()
    {
        await using var server = await ChatServer.StartAsync(new()
        {
            ["RateLimits:Reads:Burst"] = "5",
            ["RateLimits:Reads:PerSecond"] = "0.001",
        });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("wide resume", bob);
        await using var socket = await server.ConnectAsync(bob);

        // 301 conversations: four units, the rest of the burst after the connect's.
        var conversations = Enumerable.Range(0, 300).ToDictionary(_ => Guid.NewGuid(), _ => 0L);
        conversations[id] = 0;
        await socket.SendAsync(new { type = "resume", conversations });
        Assert.Equal(id, (await socket.WaitForAsync(f => f.Type == "resumed")).ConversationId);

        await socket.SendAsync(new { type = "resume", conversations = new Dictionary<Guid, long> { [id] = 0 } });
        var refused = await socket.WaitForAsync(f => f.Type == "resumed" || (f.Type == "error" && f.Json.GetProperty("code").GetString() == "rate_limited"));
        Assert.Equal("error", refused.Type);
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

    private sealed class ManualTime : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
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
