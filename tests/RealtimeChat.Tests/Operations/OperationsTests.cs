using System.IdentityModel.Tokens.Jwt;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Claims;
using System.Text;
using Microsoft.IdentityModel.Tokens;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

public sealed class OperationsTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    [Fact]
    public async Task Health_endpoints_answer_without_a_token()
    {
        var client = _server.Client();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health/live")).StatusCode);
        var ready = await client.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("Healthy", await ready.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Metrics_expose_sends_connections_and_fanout()
    {
        var alice = Guid.NewGuid();
        var id = await _server.Client(alice).CreateGroupAsync("metrics");
        await using var socket = await _server.ConnectAsync(alice);
        await _server.Client(alice).SendAsync(id, "count me");
        await socket.WaitForAsync(f => f.Type == "message.new");

        var metrics = await _server.Client().GetStringAsync("/metrics");
        Assert.Matches(@"chat_messages_sent_total\{kind=""text""\} [1-9]", metrics);
        Assert.Matches(@"chat_websocket_connections [1-9]", metrics);
        Assert.Matches(@"chat_fanout_latency_seconds_count [1-9]", metrics);
        Assert.Matches(@"chat_db_commit_seconds_count [1-9]", metrics);
        Assert.Contains("http_request_duration_seconds", metrics);
    }

    [Fact]
    public async Task Metrics_leave_out_the_framework_s_per_request_and_per_buffer_instruments()
    {
        var alice = Guid.NewGuid();
        var id = await _server.Client(alice).CreateGroupAsync("metrics cost");
        await _server.Client(alice).SendAsync(id, "read my buffers");
        await _server.Client().GetStringAsync("/metrics");
        await _server.Client(alice).SendAsync(id, "again, now that the adapter listens");

        var metrics = await _server.Client().GetStringAsync("/metrics");
        // Runtime and connection gauges stay: they are read when scraped, or change once per connection.
        Assert.Contains("system_runtime_dotnet_jit_compilation_time", metrics);
        Assert.Contains("microsoft_aspnetcore_server_kestrel_kestrel_active_connections", metrics);
        // Recorded on every 4 KiB buffer a socket reads (a fifth of the CPU under an upload flood), on every request
        // (http_request_duration_seconds has it already) or on every database command.
        Assert.DoesNotContain("microsoft_aspnetcore_memorypool", metrics);
        Assert.DoesNotContain("microsoft_aspnetcore_hosting_http_server_request_duration", metrics);
        Assert.DoesNotContain("microsoft_aspnetcore_routing", metrics);
        Assert.DoesNotContain("npgsql_", metrics);
    }

    [Fact]
    public async Task Request_id_is_echoed_or_generated()
    {
        var client = _server.Client();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/health/live");
        request.Headers.Add("X-Request-Id", "trace-me-42");
        var echoed = await client.SendAsync(request);
        Assert.Equal("trace-me-42", echoed.Headers.GetValues("X-Request-Id").Single());

        var generated = await client.GetAsync("/health/live");
        Assert.Matches("^[0-9a-f]{32}$", generated.Headers.GetValues("X-Request-Id").Single());

        var problem = await (await _server.Client(Guid.NewGuid()).GetAsync($"/api/v1/conversations/{Guid.NewGuid()}")).ProblemAsync(HttpStatusCode.NotFound);
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("request_id").GetString()));
    }

    [Fact]
    public async Task OpenApi_document_and_docs_page_are_served()
    {
        var document = await _server.Client().GetStringAsync("/openapi/v1.json");
        Assert.Contains("/api/v1/conversations/{conversationId}/messages", document);
        var docs = await _server.Client().GetAsync("/docs");
        Assert.Equal(HttpStatusCode.OK, docs.StatusCode);
        Assert.Equal("text/html", docs.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Bad_tokens_are_401_problems()
    {
        var key = Encoding.UTF8.GetBytes(ChatServer.SigningKey);
        var cases = new Dictionary<string, string>
        {
            ["expired"] = Token(key, Guid.NewGuid().ToString(), DateTime.UtcNow.AddHours(-2), DateTime.UtcNow.AddHours(-1)),
            ["sub not a uuid"] = Token(key, "alice", DateTime.UtcNow.AddMinutes(-1), DateTime.UtcNow.AddHours(1)),
            ["wrong key"] = Token(Encoding.UTF8.GetBytes(new string('k', 64)), Guid.NewGuid().ToString(), DateTime.UtcNow.AddMinutes(-1), DateTime.UtcNow.AddHours(1)),
            ["garbage"] = "not-a-jwt",
        };
        foreach (var (name, token) in cases)
        {
            var client = _server.Client();
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
            var response = await client.GetAsync("/api/v1/conversations");
            var problem = await response.ProblemAsync(HttpStatusCode.Unauthorized, "unauthorized");
            Assert.True(response.Headers.WwwAuthenticate.Count > 0, name);
            if (name == "expired")
            {
                Assert.Contains("expired", problem.GetProperty("detail").GetString());
            }
        }
        await (await _server.Client().GetAsync("/api/v1/conversations")).ProblemAsync(HttpStatusCode.Unauthorized, "unauthorized");
    }

    [Fact]
    public async Task Oversized_bodies_and_wrong_media_types_are_4xx()
    {
        var alice = Guid.NewGuid();
        var client = _server.Client(alice);
        var id = await client.CreateGroupAsync("limits");

        var huge = new StringContent($"{{\"content\":\"{new string('x', 200_000)}\"}}", Encoding.UTF8, "application/json");
        await (await client.PostAsync($"/api/v1/conversations/{id}/messages", huge)).ProblemAsync(HttpStatusCode.RequestEntityTooLarge, "payload_too_large");

        var text = new StringContent("hello", Encoding.UTF8, "text/plain");
        await (await client.PostAsync($"/api/v1/conversations/{id}/messages", text)).ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");

        var history = await client.GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Empty(history.GetProperty("messages").EnumerateArray());
    }

    [Fact]
    public async Task Sends_are_rate_limited_per_user_with_retry_after()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Messages:SendsPerSecond"] = "1", ["Messages:SendBurst"] = "3" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("flood", bob);

        // The burst of 3, plus one refill for every (started) second the sends took: a loaded machine can be that slow.
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var accepted = 0;
        HttpResponseMessage limited;
        while ((limited = await server.Client(alice).PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = $"send {accepted}" })).StatusCode != HttpStatusCode.TooManyRequests)
        {
            Assert.Equal(HttpStatusCode.Created, limited.StatusCode);
            accepted++;
            Assert.True(accepted <= 3 + (int)Math.Ceiling(watch.Elapsed.TotalSeconds), $"{accepted} sends accepted in {watch.Elapsed}");
        }
        Assert.True(accepted >= 3, $"only {accepted} sends before the first 429");
        await limited.ProblemAsync(HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.True(limited.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));

        await server.Client(bob).SendAsync(id, "bob has his own budget");
    }

    private static string Token(byte[] key, string sub, DateTime notBefore, DateTime expires) =>
        new JwtSecurityTokenHandler().WriteToken(new JwtSecurityToken(
            claims: [new Claim("sub", sub)],
            notBefore: notBefore,
            expires: expires,
            signingCredentials: new SigningCredentials(new SymmetricSecurityKey(key), SecurityAlgorithms.HmacSha256)));
}
