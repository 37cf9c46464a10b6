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
