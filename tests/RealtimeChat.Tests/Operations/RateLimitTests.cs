using System.Net;
using System.Text;
using Dapper;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

public sealed class RateLimitTests
{
    // Budgets small enough to exhaust in a test, refilled too slowly to come back during it.
    private static Dictionary<string, string?> SmallBudgets(int burst = 2) => new()
    {
        ["Messages:SendsPerSecond"] = "0.01",
        ["Messages:SendBurst"] = burst.ToString(),
        ["RateLimits:Edits:PerSecond"] = "0.01",
        ["RateLimits:Edits:Burst"] = burst.ToString(),
        ["RateLimits:Conversations:PerSecond"] = "0.01",
        ["RateLimits:Conversations:Burst"] = (burst + 1).ToString(),
        ["RateLimits:Uploads:PerSecond"] = "0.01",
        ["RateLimits:Uploads:Burst"] = burst.ToString(),
        ["RateLimits:ReadMarkers:PerSecond"] = "0.01",
        ["RateLimits:ReadMarkers:Burst"] = burst.ToString(),
        ["RateLimits:Reads:PerSecond"] = "0.01",
        ["RateLimits:Reads:Burst"] = (burst + 1).ToString(),
    };

    [Fact]
    public async Task Each_write_class_has_its_own_per_user_budget_with_headers_and_a_429_problem()
    {
        await using var server = await ChatServer.StartAsync(SmallBudgets());
        var (alice, bob, carol) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("budgets", bob);
        var url = $"/api/v1/conversations/{id}";

        // Sends.
        var first = await client.PostJsonAsync($"{url}/messages", new { content = "one" });
        var m1 = (await first.JsonAsync(HttpStatusCode.Created)).GetProperty("id").GetGuid();
        AssertHeaders(first, limit: 2, remaining: 1);
        var second = await client.PostJsonAsync($"{url}/messages", new { content = "two" });
        var m2 = (await second.JsonAsync(HttpStatusCode.Created)).GetProperty("id").GetGuid();
        AssertHeaders(second, limit: 2, remaining: 0);
        await AssertLimitedAsync(await client.PostJsonAsync($"{url}/messages", new { content = "three" }), limit: 2);

        // Edits, deletes and reactions share one budget, separate from sends.
        var edit = await client.PatchJsonAsync($"{url}/messages/{m1}", new { content = "one, edited" });
        await edit.JsonAsync(HttpStatusCode.OK);
        AssertHeaders(edit, limit: 2, remaining: 1);
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync($"{url}/messages/{m1}/reactions/{Uri.EscapeDataString("👍")}", null)).StatusCode);
        await AssertLimitedAsync(await client.DeleteAsync($"{url}/messages/{m2}"), limit: 2);
        await AssertLimitedAsync(await client.PutAsync($"{url}/messages/{m1}/reactions/{Uri.EscapeDataString("🎉")}", null), limit: 2);

        // Read markers.
        for (var seq = 1; seq <= 2; seq++)
        {
            await (await client.PutJsonAsync($"{url}/read", new { seq })).JsonAsync(HttpStatusCode.OK);
        }
        await AssertLimitedAsync(await client.PutJsonAsync($"{url}/read", new { seq = 3 }), limit: 2);

        // Uploads.
        for (var i = 0; i < 2; i++)
        {
            await (await client.PostAsync($"{url}/media", Upload())).JsonAsync(HttpStatusCode.Created);
        }
        await AssertLimitedAsync(await client.PostAsync($"{url}/media", Upload()), limit: 2);

        // Conversation creation and membership changes share one budget.
        var carolClient = server.Client(carol);
        var created = await carolClient.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "spam" });
        var spam = (await created.JsonAsync(HttpStatusCode.Created)).GetProperty("id").GetGuid();
        AssertHeaders(created, limit: 3, remaining: 2);
        await (await carolClient.PostJsonAsync($"/api/v1/conversations/{spam}/members", new { user_id = alice })).JsonAsync(HttpStatusCode.Created);
        await (await carolClient.PatchJsonAsync($"/api/v1/conversations/{spam}", new { name = "spam 2" })).JsonAsync(HttpStatusCode.OK);
        await AssertLimitedAsync(await carolClient.PostJsonAsync($"/api/v1/conversations/{spam}/members", new { user_id = bob }), limit: 3);
        await AssertLimitedAsync(await carolClient.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "spam 3" }), limit: 3);

        // Reads: looser in production, but bounded too.
        for (var i = 0; i < 2; i++)
        {
            var read = await client.GetAsync($"{url}/messages");
            await read.JsonAsync(HttpStatusCode.OK);
            AssertHeaders(read, limit: 3, remaining: 2 - i);
        }
        // An error answer counts and says so too.
        var missing = await client.GetAsync($"/api/v1/conversations/{Guid.NewGuid()}");
        await missing.ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        AssertHeaders(missing, limit: 3, remaining: 0);
        await AssertLimitedAsync(await client.GetAsync($"{url}/messages"), limit: 3);

        // Bob's budgets are his own.
        var bobClient = server.Client(bob);
        await bobClient.SendAsync(id, "bob still sends");
        Assert.Equal(HttpStatusCode.NoContent, (await bobClient.PutAsync($"{url}/messages/{m1}/reactions/{Uri.EscapeDataString("👍")}", null)).StatusCode);
        await bobClient.GetJsonAsync($"{url}/messages");

        var metrics = await server.Client().GetStringAsync("/metrics");
        Assert.Matches(@"chat_rate_limited_total\{class=""edits""\} [1-9]", metrics);
        Assert.Matches(@"chat_rate_limited_total\{class=""conversations""\} [1-9]", metrics);
    }

    [Fact]
    public async Task A_budget_refills_at_its_configured_rate()
    {
        await using var server = await ChatServer.StartAsync(new() { ["RateLimits:Edits:PerSecond"] = "2", ["RateLimits:Edits:Burst"] = "1" });
        var alice = Guid.NewGuid();
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("refill");
        var message = (await client.SendAsync(id, "react to me")).GetProperty("id").GetGuid();
        var reaction = $"/api/v1/conversations/{id}/messages/{message}/reactions/{Uri.EscapeDataString("👍")}";

        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(reaction, null)).StatusCode);
        var limited = await client.DeleteAsync(reaction);
        await AssertLimitedAsync(limited, limit: 1);
        Assert.Equal("1", limited.Headers.GetValues("X-RateLimit-Reset").Single());

        await Task.Delay(TimeSpan.FromSeconds(1.2));
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync(reaction)).StatusCode);
    }

    [Fact]
    public async Task A_large_group_costs_one_more_unit_per_hundred_members()
    {
        await using var server = await ChatServer.StartAsync(new() { ["RateLimits:Conversations:PerSecond"] = "0.01", ["RateLimits:Conversations:Burst"] = "8" });
        var carol = Guid.NewGuid();
        var client = server.Client(carol);
        var members = Enumerable.Range(0, 450).Select(_ => Guid.NewGuid()).ToArray();

        var big = await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "big", member_ids = members });
        await big.JsonAsync(HttpStatusCode.Created);
        AssertHeaders(big, limit: 8, remaining: 3);

        // 3 left: another 450 members (5 units) is refused and not created; the unit it took at the door is spent.
        var refused = await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "big 2", member_ids = members });
        await refused.ProblemAsync(HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.True(refused.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        AssertHeaders(refused, limit: 8, remaining: 2);

        await (await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "small", member_ids = members.Take(99) })).JsonAsync(HttpStatusCode.Created);
        var mine = await client.GetJsonAsync("/api/v1/conversations");
        Assert.Equal(["small", "big"], mine.GetProperty("conversations").EnumerateArray().Select(c => c.GetProperty("name").GetString()));
    }

    [Fact]
    public async Task A_large_upload_costs_one_more_unit_per_started_mebibyte_past_the_first()
    {
        await using var server = await ChatServer.StartAsync(new() { ["RateLimits:Uploads:PerSecond"] = "0.01", ["RateLimits:Uploads:Burst"] = "10" });
        var dave = Guid.NewGuid();
        var client = server.Client(dave);
        var conversation = await client.CreateGroupAsync("big files");

        // 3.5 MiB of file (and the form around it): four units.
        var big = await client.PostAsync($"/api/v1/conversations/{conversation}/media", ZeroBytes(3 * 1024 * 1024 + 512 * 1024));
        await big.JsonAsync(HttpStatusCode.Created);
        AssertHeaders(big, limit: 10, remaining: 6);

        // 6 left: 6.5 MiB (seven units) is refused before a byte of it is stored; the unit it took at the door is spent.
        var refused = await client.PostAsync($"/api/v1/conversations/{conversation}/media", ZeroBytes(6 * 1024 * 1024 + 512 * 1024));
        await refused.ProblemAsync(HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.True(refused.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
        AssertHeaders(refused, limit: 10, remaining: 5);

        await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", ZeroBytes(1000))).JsonAsync(HttpStatusCode.Created);
        var history = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(2, history.GetProperty("messages").GetArrayLength());
    }

    [Fact]
    public async Task The_largest_upload_allowed_costs_at_most_the_whole_burst()
    {
        await using var server = await ChatServer.StartAsync(new()
        {
            ["Media:MaxUploadBytes"] = (2 * 1024 * 1024).ToString(),
            ["RateLimits:UploadBytesPerPermit"] = (256 * 1024).ToString(),
            ["RateLimits:Uploads:PerSecond"] = "0.01",
            ["RateLimits:Uploads:Burst"] = "3",
        });
        var client = server.Client(Guid.NewGuid());
        var conversation = await client.CreateGroupAsync("largest");

        var largest = await client.PostAsync($"/api/v1/conversations/{conversation}/media", ZeroBytes(2 * 1024 * 1024));
        await largest.JsonAsync(HttpStatusCode.Created);
        AssertHeaders(largest, limit: 3, remaining: 0);
    }

    [Fact]
    public async Task A_refusal_is_held_for_the_rejection_delay_so_a_flood_slows_down()
    {
        await using var server = await ChatServer.StartAsync(new()
        {
            ["Messages:SendsPerSecond"] = "1", ["Messages:SendBurst"] = "1", ["RateLimits:RejectionDelay"] = "00:00:00.600",
        });
        var client = server.Client(Guid.NewGuid());
        var id = await client.CreateGroupAsync("held");
        await client.SendAsync(id, "the only one");

        var started = System.Diagnostics.Stopwatch.StartNew();
        await AssertLimitedAsync(await client.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = "held" }), limit: 1);
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(550), $"answered after {started.Elapsed}");
    }

    [Fact]
    public async Task A_users_writes_beyond_the_concurrent_limit_wait_their_turn_while_other_users_go_ahead()
    {
        await using var server = await ChatServer.StartAsync(new() { ["RateLimits:ConcurrentWrites"] = "1" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("turns", bob);
        var url = $"/api/v1/conversations/{id}/messages";

        // Alice's first send holds her only turn for as long as its body takes to arrive.
        var body = new StalledJson("""{"content":"slow"}""");
        using var slowClient = server.Client(alice);
        var slow = slowClient.PostAsync(url, body);
        await body.Started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await HoldsTheTurnAsync(server, alice);

        // Bob's writes are not behind Alice's; her next one waits for the turn.
        await (await server.Client(bob).PostJsonAsync(url, new { content = "bob goes ahead" })).JsonAsync(HttpStatusCode.Created);
        var waiting = client.PostJsonAsync(url, new { content = "after the slow one" });
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        Assert.False(waiting.IsCompleted, "a write beyond the user's concurrent limit was served at once");

        body.Finish();
        await (await slow).JsonAsync(HttpStatusCode.Created);
        var after = await (await waiting.WaitAsync(TimeSpan.FromSeconds(10))).JsonAsync(HttpStatusCode.Created);
        Assert.Equal("after the slow one", after.GetProperty("content").GetString());
    }

    [Fact]
    public async Task Past_256_writes_waiting_for_a_turn_a_users_write_is_refused_and_the_waiting_ones_all_land()
    {
        await using var server = await ChatServer.StartAsync(new()
        {
            ["RateLimits:ConcurrentWrites"] = "1",
            ["Messages:SendsPerSecond"] = "100000",
            ["Messages:SendBurst"] = "100000",
        });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await server.Client(alice).CreateGroupAsync("queue", bob);
        var url = $"/api/v1/conversations/{id}/messages";
        // Kept flowing (whitespace), so that Kestrel's minimum body data rate does not end it while the queue fills.
        var body = new StalledJson("""{"content":"holds the turn"}""", trickle: true);
        using var slowClient = server.Client(alice);
        var slow = slowClient.PostAsync(url, body);
        await body.Started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await HoldsTheTurnAsync(server, alice);

        // 300 more while the only turn is held: 256 wait, the rest are refused whatever order they arrive in.
        using var client = server.Client(alice);
        var writes = Enumerable.Range(0, 300).Select(i => client.PostJsonAsync(url, new { content = $"queued {i}" })).ToList();
        await Eventually.Async(() => writes.Count(w => w.IsCompleted) >= 300 - 256, "the writes past the queue to be refused", TimeSpan.FromSeconds(60));
        foreach (var refused in writes.Where(w => w.IsCompleted))
        {
            var problem = await (await refused).JsonAsync(HttpStatusCode.TooManyRequests);
            Assert.Equal("rate_limited", problem.GetProperty("code").GetString());
            Assert.True((await refused).Headers.RetryAfter is not null);
        }

        body.Finish();
        await (await slow).JsonAsync(HttpStatusCode.Created);
        var answers = await Task.WhenAll(writes).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(256, answers.Count(a => a.StatusCode == HttpStatusCode.Created));
        Assert.Equal(300 - 256, answers.Count(a => a.StatusCode == HttpStatusCode.TooManyRequests));
        Assert.Equal(257, await MessageCountAsync(server, id));
    }

    [Fact]
    public async Task A_slow_upload_does_not_hold_up_the_users_other_writes()
    {
        await using var server = await ChatServer.StartAsync(new() { ["RateLimits:ConcurrentWrites"] = "1" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("slow link", bob);
        var url = $"/api/v1/conversations/{id}";

        // A voice message on a slow link: its body takes as long as it takes, holding the user's only upload turn.
        var body = new StalledJson("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.ogg\"\r\n\r\nx\r\n--b--\r\n");
        body.Headers.ContentType = new("multipart/form-data") { Parameters = { new("boundary", "b") } };
        using var slowClient = server.Client(alice);
        var slow = slowClient.PostAsync($"{url}/media", body);
        await body.Started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await HoldsTheTurnAsync(server, alice);

        // Her chat goes on meanwhile.
        var sent = await client.PostJsonAsync($"{url}/messages", new { content = "typed while the upload crawls" }).WaitAsync(TimeSpan.FromSeconds(5));
        await sent.JsonAsync(HttpStatusCode.Created);
        await (await client.PutJsonAsync($"{url}/read", new { seq = 1 }).WaitAsync(TimeSpan.FromSeconds(5))).JsonAsync(HttpStatusCode.OK);

        body.Finish();
        (await slow).Dispose();
    }

    [Fact]
    public async Task A_refused_write_says_how_much_of_its_budget_is_left()
    {
        await using var server = await ChatServer.StartAsync(SmallBudgets(burst: 3));
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("errors", bob);
        var url = $"/api/v1/conversations/{id}";

        var empty = await client.PostJsonAsync($"{url}/messages", new { content = "" });
        await empty.ProblemAsync(HttpStatusCode.BadRequest, "content_required");
        AssertHeaders(empty, limit: 3, remaining: 2);
        var notMine = await client.PutAsync($"{url}/messages/{Guid.NewGuid()}/reactions/{Uri.EscapeDataString("👍")}", null);
        Assert.Equal(HttpStatusCode.NotFound, notMine.StatusCode);
        AssertHeaders(notMine, limit: 3, remaining: 2);
        var elsewhere = await client.PostJsonAsync($"/api/v1/conversations/{Guid.NewGuid()}/messages", new { content = "x" });
        await elsewhere.ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        AssertHeaders(elsewhere, limit: 3, remaining: 1);
    }

    // The body's first bytes having left the client does not mean the server has given the write its turn yet: a
    // write sent now could overtake it, take the turn and be answered at once (CI saw a 201 where 429 was due).
    private static Task HoldsTheTurnAsync(ChatServer server, Guid user)
    {
        var limits = server.Services.GetRequiredService<ChatRateLimits>();
        return Eventually.Async(() => limits.WriteTurnsTaken(user) == 1, "the slow write to hold the user's turn", TimeSpan.FromSeconds(10));
    }

    private static async Task<long> MessageCountAsync(ChatServer server, Guid conversationId)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return await connection.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM messages WHERE conversation_id = @conversationId", new { conversationId });
    }

    /// <summary>A JSON body whose last byte is sent only when the test says so (meanwhile, whitespace if it trickles).</summary>
    private sealed class StalledJson : HttpContent
    {
        private readonly string _json;
        private readonly bool _trickle;
        private readonly TaskCompletionSource _finish = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public StalledJson(string json, bool trickle = false)
        {
            _json = json;
            _trickle = trickle;
            Headers.ContentType = new("application/json");
        }

        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Finish() => _finish.TrySetResult();

        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
        {
            var bytes = Encoding.UTF8.GetBytes(_json);
            await stream.WriteAsync(bytes.AsMemory(0, bytes.Length - 1));
            await stream.FlushAsync();
            Started.TrySetResult();
            while (_trickle && !_finish.Task.IsCompleted)
            {
                await stream.WriteAsync(Whitespace);
                await stream.FlushAsync();
                await Task.WhenAny(_finish.Task, Task.Delay(100));
            }
            await _finish.Task;
            await stream.WriteAsync(bytes.AsMemory(bytes.Length - 1));
        }

        private static readonly byte[] Whitespace = Encoding.UTF8.GetBytes(new string(' ', 64));

        protected override bool TryComputeLength(out long length)
        {
            length = Encoding.UTF8.GetByteCount(_json);
            return !_trickle;
        }
    }

    [Fact]
    public async Task Every_api_write_endpoint_draws_on_a_rate_limit_class()
    {
        await using var server = await ChatServer.StartAsync();
        var endpoints = server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>();
        var unlimited = endpoints
            .Where(e => e.RoutePattern.RawText?.StartsWith("/api", StringComparison.Ordinal) == true)
            .Where(e => e.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods.Any(m => m is not ("GET" or "HEAD")) == true)
            .Where(e => e.Metadata.GetMetadata<RateLimitClassMetadata>() is null)
            .Select(e => e.DisplayName)
            .ToList();
        Assert.Empty(unlimited);
    }

    private static MultipartFormDataContent Upload() => UploadForm(Encoding.UTF8.GetBytes("some bytes"), "text/plain", "note.txt");

    private static MultipartFormDataContent ZeroBytes(int bytes) => UploadForm(new byte[bytes], "application/octet-stream", "zeros.bin");

    private static MultipartFormDataContent UploadForm(byte[] content, string contentType, string fileName)
    {
        var file = new ByteArrayContent(content);
        file.Headers.ContentType = new(contentType);
        return new MultipartFormDataContent { { file, "file", fileName } };
    }

    private static void AssertHeaders(HttpResponseMessage response, int limit, int remaining)
    {
        Assert.Equal(limit.ToString(), response.Headers.GetValues("X-RateLimit-Limit").Single());
        Assert.Equal(remaining.ToString(), response.Headers.GetValues("X-RateLimit-Remaining").Single());
        Assert.True(int.Parse(response.Headers.GetValues("X-RateLimit-Reset").Single()) >= 0);
    }

    private static async Task AssertLimitedAsync(HttpResponseMessage response, int limit)
    {
        await response.ProblemAsync(HttpStatusCode.TooManyRequests, "rate_limited");
        Assert.True(response.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1), "429 without Retry-After");
        AssertHeaders(response, limit, remaining: 0);
        Assert.True(int.Parse(response.Headers.GetValues("X-RateLimit-Reset").Single()) >= 1);
    }
}
