using System.Net;
using System.Text;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

/// <summary>Throws malformed bodies, ids and query values at every endpoint: a client mistake is never a 5xx.</summary>
public sealed class FuzzTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    private static readonly string[] Bodies =
    [
        "", "{", "}", "[]", "null", "123", "\"text\"", "{\"content\":5}", "{\"content\":null}", "{\"content\":[\"a\"]}",
        "{\"content\":{}}", "{\"kind\":\"weird\"}", "{\"kind\":7}", "{\"kind\":\"group\",\"name\":7}", "{\"member_ids\":\"x\"}",
        "{\"member_ids\":[\"not-a-uuid\"]}", "{\"member_ids\":[null]}", "{\"kind\":\"direct\",\"member_ids\":[]}",
        "{\"user_id\":\"nope\"}", "{\"user_id\":\"00000000-0000-0000-0000-000000000000\"}", "{\"role\":\"emperor\"}",
        "{\"seq\":\"abc\"}", "{\"seq\":-5}", "{\"seq\":1e400}", "{\"reply_to\":\"zzz\"}", "{\"client_message_id\":\"\"}",
        "{\"content\":\"\",\"client_message_id\":7}", "{\"name\":\"\\u0000\"}",
        new string('[', 5000) + new string(']', 5000), "{\"content\":\"" + new string('y', 70_000) + "\"}",
    ];

    private static readonly string[] BadIds =
    [
        "not-a-guid", "00000000-0000-0000-0000-000000000000", Guid.NewGuid().ToString(), "%00", "..%2F..", "1", new string('a', 600), "%F0%9F%92%A5",
    ];

    [Fact]
    public async Task Malformed_requests_never_produce_a_server_error_or_partial_data()
    {
        var (owner, member) = (Guid.NewGuid(), Guid.NewGuid());
        var client = _server.Client(owner);
        var conversation = await client.CreateGroupAsync("fuzz target", member);
        var message = (await client.SendAsync(conversation, "anchor")).GetProperty("id").GetGuid();
        var before = await client.GetJsonAsync($"/api/v1/conversations/{conversation}");

        var templates = new (string Method, string Path)[]
        {
            ("POST", "/api/v1/conversations"),
            ("GET", "/api/v1/conversations?limit={q}&cursor={q}"),
            ("GET", "/api/v1/conversations/{c}"),
            ("PATCH", "/api/v1/conversations/{c}"),
            ("GET", "/api/v1/conversations/{c}/members"),
            ("POST", "/api/v1/conversations/{c}/members"),
            ("PATCH", "/api/v1/conversations/{c}/members/{m}"),
            ("DELETE", "/api/v1/conversations/{c}/members/{m}"),
            ("POST", "/api/v1/conversations/{c}/leave"),
            ("POST", "/api/v1/conversations/{c}/messages"),
            ("GET", "/api/v1/conversations/{c}/messages?before={q}&after={q}&limit={q}"),
            ("GET", "/api/v1/conversations/{c}/messages/{m}"),
            ("PATCH", "/api/v1/conversations/{c}/messages/{m}"),
            ("DELETE", "/api/v1/conversations/{c}/messages/{m}"),
            ("PUT", "/api/v1/conversations/{c}/messages/{m}/reactions/{q}"),
            ("DELETE", "/api/v1/conversations/{c}/messages/{m}/reactions/{q}"),
            ("PUT", "/api/v1/conversations/{c}/read"),
            ("GET", "/ws"),
        };
        var queryValues = new[] { "abc", "-1", "0", "99999999999999999999", "%00", "", "1.5", new string('9', 400) };
        var random = new Random(20261124);
        var failures = new List<string>();

        // Phase 1: real ids, hostile bodies and query values at every endpoint that reads a body or query.
        // None of these is a valid request, so nothing may change.
        var bodyless = new[] { "/leave", "/reactions/", "/ws" };
        foreach (var (method, template) in templates.Where(t => t.Method is not "DELETE" && !bodyless.Any(t.Path.Contains)))
        {
            foreach (var body in Bodies)
            {
                await ExpectClientErrorAsync(method, Fill(template, conversation.ToString(), message.ToString(), queryValues[random.Next(queryValues.Length)]), body);
            }
        }
        var unchanged = await client.GetJsonAsync($"/api/v1/conversations/{conversation}");
        Assert.Equal("fuzz target", unchanged.GetProperty("name").GetString());
        Assert.Equal(2, unchanged.GetProperty("member_count").GetInt32());
        Assert.Equal(before.GetProperty("last_seq").GetInt64(), unchanged.GetProperty("last_seq").GetInt64());
        var history = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(["anchor"], history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));

        // Phase 2: hostile ids (and random mixes with real ones) with bodies that may be valid: never a 5xx.
        foreach (var (method, template) in templates)
        {
            foreach (var id in BadIds)
            {
                await ExpectNoServerErrorAsync(method, Fill(template, id, id, queryValues[random.Next(queryValues.Length)]), "{\"content\":\"x\",\"name\":\"x\",\"seq\":1}");
            }
            for (var i = 0; i < 10; i++)
            {
                await ExpectNoServerErrorAsync(method,
                    Fill(template, Pick(random, BadIds, conversation), Pick(random, BadIds, message), queryValues[random.Next(queryValues.Length)]),
                    Bodies[random.Next(Bodies.Length)]);
            }
        }

        // Invalid UTF-8 in the body.
        var bytes = new ByteArrayContent([0x7b, 0x22, 0x63, 0x6f, 0x6e, 0x74, 0x65, 0x6e, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
        bytes.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        var invalid = await client.PostAsync($"/api/v1/conversations/{conversation}/messages", bytes);
        Assert.True((int)invalid.StatusCode is >= 400 and < 500, $"invalid UTF-8 → {(int)invalid.StatusCode}");

        Assert.True(failures.Count == 0, string.Join("\n", failures));

        async Task<HttpResponseMessage> SendAsync(string method, string path, string body)
        {
            // After refusing an oversized body the server closes the connection (as HTTP allows); a fresh
            // connection per request keeps the next request from landing on a socket that is going away.
            using var request = new HttpRequestMessage(new HttpMethod(method), path) { Headers = { ConnectionClose = true } };
            if (method is "POST" or "PATCH" or "PUT")
            {
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            }
            return await client.SendAsync(request);
        }

        async Task ExpectNoServerErrorAsync(string method, string path, string body)
        {
            HttpResponseMessage response;
            try
            {
                response = await SendAsync(method, path, body);
            }
            catch (HttpRequestException ex)
            {
                failures.Add($"{method} {path} {Truncate(body)} → connection failed: {ex.InnerException?.Message ?? ex.Message}");
                return;
            }
            if ((int)response.StatusCode >= 500)
            {
                failures.Add($"{method} {path} {Truncate(body)} → {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
        }

        async Task ExpectClientErrorAsync(string method, string path, string body)
        {
            var response = await SendAsync(method, path, body);
            var status = (int)response.StatusCode;
            // GETs ignore bodies and may legitimately succeed; everything else must refuse.
            var mayAccept = method == "GET";
            if (status >= 500 || (!mayAccept && status < 400))
            {
                failures.Add($"{method} {path} {Truncate(body)} → {status} {await response.Content.ReadAsStringAsync()}");
            }
            else if (status >= 400 && response.Content.Headers.ContentLength != 0)
            {
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            }
        }
    }

    private static string Fill(string template, string conversation, string message, string query) =>
        template.Replace("{c}", conversation).Replace("{m}", message).Replace("{q}", query);

    private static string Pick(Random random, string[] bad, Guid real) => random.Next(3) == 0 ? real.ToString() : bad[random.Next(bad.Length)];

    private static string Truncate(string body) => body.Length > 60 ? body[..60] + "…" : body;
}
