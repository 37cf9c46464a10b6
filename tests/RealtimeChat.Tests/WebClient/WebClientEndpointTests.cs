using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.WebClient;

public sealed class WebClientEndpointTests
{
    private static readonly Guid Alice = Guid.Parse("11111111-1111-4111-8111-111111111111");

    [Fact]
    public async Task The_page_and_its_files_are_served_at_the_root()
    {
        await using var server = await ChatServer.StartAsync();
        using var client = server.Client();

        var page = await client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<script src=\"app.js\"", await page.Content.ReadAsStringAsync());
        Assert.Contains("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());

        var script = await client.GetAsync("/app.js");
        Assert.Equal(HttpStatusCode.OK, script.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/app.css")).StatusCode);
    }

    [Fact]
    public async Task With_the_generated_development_key_the_page_gets_tokens_the_service_accepts()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null });
        using var client = server.Client();

        var config = await client.GetFromJsonAsync<JsonElement>("/api/v1/web/config");
        Assert.True(config.GetProperty("development_sign_in").GetBoolean());

        var response = await client.PostAsJsonAsync("/api/v1/web/dev-token", new { user_id = Alice, display_name = "Alice" });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var token = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("access_token").GetString();

        using var authorized = server.Client();
        authorized.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await authorized.GetAsync("/api/v1/conversations")).StatusCode);

        var bad = await client.PostAsJsonAsync("/api/v1/web/dev-token", new { display_name = "nobody" });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("user_id_required", (await bad.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString());
    }

    public static TheoryData<string, string> RealKeys => new()
    {
        { "Auth:SigningKey", ChatServer.SigningKey },
        { "Auth:SigningKeyFile", "signing-key-file" },
        { "Auth:Authority", "https://idp.example.test/realms/nova" },
    };

    [Theory]
    [MemberData(nameof(RealKeys))]
    public async Task With_a_configured_key_or_identity_provider_there_is_no_token_endpoint(string key, string value)
    {
        var settings = new Dictionary<string, string?> { ["Auth:SigningKey"] = null };
        var dataDirectory = Directory.CreateTempSubdirectory("chat-key-").FullName;
        try
        {
            if (key == "Auth:SigningKeyFile")
            {
                value = Path.Combine(dataDirectory, value);
                await File.WriteAllTextAsync(value, ChatServer.SigningKey);
            }
            settings[key] = value;
            await using var server = await ChatServer.StartAsync(settings);
            using var client = server.Client();

            var response = await client.PostAsJsonAsync("/api/v1/web/dev-token", new { user_id = Alice });
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            var config = await client.GetFromJsonAsync<JsonElement>("/api/v1/web/config");
            Assert.False(config.GetProperty("development_sign_in").GetBoolean());
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/")).StatusCode);
        }
        finally
        {
            Directory.Delete(dataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task Media_accepts_the_token_in_the_query_because_audio_elements_cannot_send_headers()
    {
        await using var server = await ChatServer.StartAsync();
        var bob = Guid.NewGuid();
        using var alice = server.Client(Alice);
        var conversation = await (await alice.PostAsJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { bob } }))
            .Content.ReadFromJsonAsync<JsonElement>();
        using var form = new MultipartFormDataContent();
        var audio = new ByteArrayContent(new byte[5000]);
        audio.Headers.ContentType = new MediaTypeHeaderValue("audio/webm");
        form.Add(audio, "file", "voice.webm");
        var sent = await (await alice.PostAsync($"/api/v1/conversations/{conversation.GetProperty("id")}/messages/audio", form))
            .Content.ReadFromJsonAsync<JsonElement>();
        var url = sent.GetProperty("media").GetProperty("url").GetString();

        using var anonymous = server.Client();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(url)).StatusCode);
        using var ranged = new HttpRequestMessage(HttpMethod.Get, $"{url}?access_token={server.TokenFor(bob)}");
        ranged.Headers.Range = new RangeHeaderValue(100, 199);
        var partial = await anonymous.SendAsync(ranged);
        Assert.Equal(HttpStatusCode.PartialContent, partial.StatusCode);
        Assert.Equal(100, (await partial.Content.ReadAsByteArrayAsync()).Length);
        // Only media reads: the rest of the API still wants the header.
        Assert.Equal(HttpStatusCode.Unauthorized,
            (await anonymous.GetAsync($"/api/v1/conversations?access_token={server.TokenFor(bob)}")).StatusCode);
    }
}
