using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RealtimeChat.Identity;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Validation;

/// <summary>
/// Requests a QA probe found answered 500 (or accepted where they should not be): unknown charsets, U+0000 in text
/// that PostgreSQL cannot store, numbers sent as strings, the all-zero user id. Each is a client mistake: 4xx, nothing
/// stored, nothing logged as an error.
/// </summary>
public sealed class OddInputTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    [Theory]
    [InlineData("application/json; charset=bogus")]
    [InlineData("application/json; charset=\"bogus\"")]
    [InlineData("application/json;charset=x-no-such-encoding")]
    public async Task An_unknown_charset_is_415_unsupported_charset_and_not_an_error(string contentType)
    {
        var errors = RecordErrors();
        var (client, conversation) = await ConversationAsync();

        var response = await client.PostAsync($"/api/v1/conversations/{conversation}/messages", Body("{\"content\":\"x\"}", contentType));
        await response.ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_charset");
        var created = await client.PostAsync("/api/v1/conversations", Body("{\"kind\":\"group\",\"name\":\"n\"}", contentType));
        await created.ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_charset");

        Assert.Empty(errors);
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));
    }

    [Theory]
    [InlineData("application/json; charset=utf-8", "utf-8")]
    [InlineData("application/json; charset=UTF-8", "utf-8")]
    [InlineData("application/json; charset=\"utf-8\"", "utf-8")]
    [InlineData("application/json; charset=utf-16", "utf-16")]
    [InlineData("application/json", "utf-8")]
    public async Task Known_charsets_keep_working(string contentType, string encoding)
    {
        var (client, conversation) = await ConversationAsync();
        var body = new ByteArrayContent(Encoding.GetEncoding(encoding).GetBytes("{\"content\":\"grüße\"}"));
        body.Headers.TryAddWithoutValidation("Content-Type", contentType);

        var message = await (await client.PostAsync($"/api/v1/conversations/{conversation}/messages", body)).JsonAsync(HttpStatusCode.Created);
        Assert.Equal("grüße", message.GetProperty("content").GetString());
    }

    [Theory]
    [InlineData("messages", "{\"content\":\"x\",\"client_message_id\":\"a\\u0000b\"}", "client_message_id")]
    [InlineData("messages", "{\"content\":\"a\\u0000b\"}", "content")]
    [InlineData("messages", "{\"content\":\"\\u0000\"}", "content")]
    public async Task U0000_in_a_json_field_is_400_invalid_text_naming_the_field(string path, string json, string field)
    {
        var errors = RecordErrors();
        var (client, conversation) = await ConversationAsync();

        var response = await client.PostAsync($"/api/v1/conversations/{conversation}/{path}", Body(json));
        var problem = await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        Assert.StartsWith($"{field}:", problem.GetProperty("detail").GetString());

        Assert.Empty(errors);
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));
    }

    [Fact]
    public async Task U0000_in_names_and_edits_is_400_invalid_text()
    {
        var (client, conversation) = await ConversationAsync();
        var anchor = (await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages")[0].GetProperty("id").GetGuid();

        await (await client.PostAsync("/api/v1/conversations", Body("{\"kind\":\"group\",\"name\":\"Ro\\u0000om\"}")))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        await (await client.PatchAsync($"/api/v1/conversations/{conversation}", Body("{\"name\":\"Ro\\u0000om\"}")))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        await (await client.PatchAsync($"/api/v1/conversations/{conversation}/messages/{anchor}", Body("{\"content\":\"ed\\u0000it\"}")))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");

        Assert.Equal("odd input", (await client.GetJsonAsync($"/api/v1/conversations/{conversation}")).GetProperty("name").GetString());
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));
    }

    [Theory]
    [InlineData("client_message_id", "a\0b")]
    [InlineData("caption", "cap\0tion")]
    public async Task U0000_in_a_multipart_field_is_400_invalid_text(string field, string value)
    {
        var errors = RecordErrors();
        var (client, conversation) = await ConversationAsync();

        var response = await client.PostAsync($"/api/v1/conversations/{conversation}/media",
            Multipart(("file", "a.ogg", "audio/ogg", "OggS data"u8.ToArray()), (field, null, null, Encoding.UTF8.GetBytes(value))));
        var problem = await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        Assert.StartsWith($"{field}:", problem.GetProperty("detail").GetString());

        Assert.Empty(errors);
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));
    }

    [Theory]
    [InlineData("form-data; name=\"file\"; filename*=UTF-8''a%00b.ogg", "audio/ogg", "file name")]
    [InlineData("form-data; name=\"file\"; filename=\"a\0b.ogg\"", "audio/ogg", "file name")]
    [InlineData("form-data; name=\"file\"; filename=\"a.ogg\"", "audio/ogg; x=\"a\0b\"", "Content-Type")]
    public async Task U0000_in_a_file_name_or_content_type_is_400_invalid_text(string disposition, string contentType, string field)
    {
        var errors = RecordErrors();
        var (client, conversation) = await ConversationAsync();

        var response = await client.PostAsync($"/api/v1/conversations/{conversation}/media", RawMultipart(disposition, contentType, "OggS data"));
        var problem = await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        Assert.Contains(field, problem.GetProperty("detail").GetString());

        Assert.Empty(errors);
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));
    }

    [Fact]
    public async Task A_file_name_longer_than_255_characters_is_400_file_name_too_long()
    {
        var (client, conversation) = await ConversationAsync();
        var url = $"/api/v1/conversations/{conversation}/media";

        var response = await client.PostAsync(url, Multipart(("file", new string('n', 10_000) + ".ogg", "audio/ogg", "OggS data"u8.ToArray())));
        await response.ProblemAsync(HttpStatusCode.BadRequest, "file_name_too_long");
        Assert.Equal(["anchor"], await ContentsAsync(client, conversation));

        // Exactly 255 is fine, and so is a long directory part, which is not kept.
        var longest = new string('n', 251) + ".ogg";
        var stored = await (await client.PostAsync(url, Multipart(("file", new string('d', 1000) + "/" + longest, "audio/ogg", "OggS data"u8.ToArray()))))
            .JsonAsync(HttpStatusCode.Created);
        Assert.Equal(longest, stored.GetProperty("media").GetProperty("file_name").GetString());
    }

    [Theory]
    [InlineData("Nu\u0000ll", "Null")]
    [InlineData("\u0000", null)]
    [InlineData("a\u0001b\u001Fc\u007F", "abc")]
    [InlineData("  Tab\tName\r\n", "Tab Name")]
    public async Task A_name_claim_with_control_characters_does_not_lock_the_user_out(string claim, string? shown)
    {
        var (user, other) = (Guid.NewGuid(), Guid.NewGuid());
        using var client = _server.Client(user, name: claim);

        await (await client.GetAsync("/api/v1/conversations")).JsonAsync(HttpStatusCode.OK);
        var created = await (await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "named", member_ids = new[] { other } }))
            .JsonAsync(HttpStatusCode.Created);
        var members = await client.GetJsonAsync($"/api/v1/conversations/{created.GetProperty("id").GetGuid()}/members");
        var me = members.EnumerateArray().Single(m => m.GetProperty("user_id").GetGuid() == user);
        Assert.Equal(shown, me.GetProperty("display_name").GetString());
    }

    [Fact]
    public async Task Numbers_must_be_json_numbers()
    {
        var (client, conversation) = await ConversationAsync();
        var url = $"/api/v1/conversations/{conversation}/read";

        await (await client.PutAsync(url, Body("{\"seq\":\"1\"}"))).ProblemAsync(HttpStatusCode.BadRequest, "malformed_json");
        await (await client.PutAsync(url, Body("{\"seq\":\"0x1\"}"))).ProblemAsync(HttpStatusCode.BadRequest, "malformed_json");
        var read = await (await client.PutAsync(url, Body("{\"seq\":1}"))).JsonAsync(HttpStatusCode.OK);
        Assert.Equal(1, read.GetProperty("last_read_seq").GetInt64());
    }

    [Fact]
    public async Task A_token_for_the_all_zero_user_is_401()
    {
        using var client = _server.Client(Guid.Empty);
        await (await client.GetAsync("/api/v1/conversations")).ProblemAsync(HttpStatusCode.Unauthorized, "unauthorized");
        await (await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "zero", member_ids = new[] { Guid.NewGuid() } }))
            .ProblemAsync(HttpStatusCode.Unauthorized, "unauthorized");

        var validated = await _server.Services.GetRequiredService<AccessTokenValidator>().ValidateAsync(_server.TokenFor(Guid.Empty), CancellationToken.None);
        Assert.Null(validated);
        Assert.NotNull(await _server.Services.GetRequiredService<AccessTokenValidator>().ValidateAsync(_server.TokenFor(Guid.NewGuid()), CancellationToken.None));
    }

    [Fact]
    public async Task Development_sign_in_refuses_U0000_in_the_display_name()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null });
        using var client = server.Client();

        var response = await client.PostAsync("/api/v1/web/dev-token", Body($"{{\"user_id\":\"{Guid.NewGuid()}\",\"display_name\":\"a\\u0000b\"}}"));
        var problem = await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_text");
        Assert.StartsWith("display_name:", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task The_api_document_still_says_which_fields_are_strings()
    {
        var document = System.Text.Json.JsonDocument.Parse(await _server.Client().GetStringAsync("/openapi/v1.json")).RootElement;
        var properties = document.GetProperty("components").GetProperty("schemas").GetProperty("SendMessageRequest").GetProperty("properties");
        Assert.Equal(["null", "string"], properties.GetProperty("content").GetProperty("type").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal(["null", "string"], properties.GetProperty("client_message_id").GetProperty("type").EnumerateArray().Select(t => t.GetString()));
        var message = document.GetProperty("components").GetProperty("schemas").GetProperty("MessageDto").GetProperty("properties");
        Assert.Equal("string", message.GetProperty("type").GetProperty("type").GetString());
    }

    private async Task<(HttpClient Client, Guid Conversation)> ConversationAsync()
    {
        var client = _server.Client(Guid.NewGuid());
        var conversation = await client.CreateGroupAsync("odd input", Guid.NewGuid());
        await client.SendAsync(conversation, "anchor");
        return (client, conversation);
    }

    private static async Task<List<string?>> ContentsAsync(HttpClient client, Guid conversation) =>
        [.. (await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages").EnumerateArray()
            .Select(m => m.GetProperty("content").GetString())];

    private static ByteArrayContent Body(string json, string contentType = "application/json")
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(json));
        content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        return content;
    }

    private static ByteArrayContent Multipart(params (string Name, string? FileName, string? ContentType, byte[] Value)[] parts)
    {
        var body = new MemoryStream();
        foreach (var (name, fileName, contentType, value) in parts)
        {
            var headers = $"--b\r\nContent-Disposition: form-data; name=\"{name}\"" + (fileName is null ? "" : $"; filename=\"{fileName}\"") + "\r\n" +
                (contentType is null ? "" : $"Content-Type: {contentType}\r\n") + "\r\n";
            body.Write(Encoding.UTF8.GetBytes(headers));
            body.Write(value);
            body.Write("\r\n"u8);
        }
        body.Write("--b--\r\n"u8);
        var content = new ByteArrayContent(body.ToArray());
        content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=b");
        return content;
    }

    private static ByteArrayContent RawMultipart(string disposition, string contentType, string file)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(
            $"--b\r\nContent-Disposition: {disposition}\r\nContent-Type: {contentType}\r\n\r\n{file}\r\n--b--\r\n"));
        content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=b");
        return content;
    }

    /// <summary>Errors the server logs from now on (the fixture's server is shared by this class's tests, which run one at a time).</summary>
    private ConcurrentQueue<string> RecordErrors()
    {
        var recorder = new ErrorRecorder();
        _server.Services.GetRequiredService<ILoggerFactory>().AddProvider(recorder);
        return recorder.Errors;
    }

    private sealed class ErrorRecorder : ILoggerProvider
    {
        public ConcurrentQueue<string> Errors { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(categoryName, Errors);

        public void Dispose()
        {
        }

        private sealed class Logger(string category, ConcurrentQueue<string> errors) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (logLevel >= LogLevel.Error)
                {
                    errors.Enqueue($"{category}: {formatter(state, exception)} {exception?.GetType().Name}");
                }
            }
        }
    }
}
