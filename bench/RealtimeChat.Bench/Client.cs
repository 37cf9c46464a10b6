using System.Buffers.Text;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace RealtimeChat.Bench;

/// <summary>HS256 development tokens for the key the harness starts the service with.</summary>
public static class Tokens
{
    public static string Mint(Guid userId)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var header = Base64Url.EncodeToString("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"u8);
        var payload = Base64Url.EncodeToString(Encoding.UTF8.GetBytes($"{{\"sub\":\"{userId}\",\"nbf\":{now - 60},\"iat\":{now},\"exp\":{now + 86400}}}"));
        var signature = Base64Url.EncodeToString(HMACSHA256.HashData(Encoding.UTF8.GetBytes(ChatService.SigningKey), Encoding.ASCII.GetBytes($"{header}.{payload}")));
        return $"{header}.{payload}.{signature}";
    }
}

/// <summary>A benchmark user: id and token.</summary>
public sealed record User(Guid Id, string Token)
{
    public static User New()
    {
        var id = Guid.NewGuid();
        return new User(id, Tokens.Mint(id));
    }
}

/// <summary>
/// The marker a benchmark message carries in its text: <c>b:&lt;Stopwatch timestamp of the (intended) send&gt;:&lt;message number&gt;</c>.
/// Found in a received frame by a byte search, not a JSON parse, so the client stays cheap at high delivery rates.
/// </summary>
public static class Marker
{
    private static readonly byte[] Needle = "\"b:"u8.ToArray();

    public static string Make(long timestamp, long number) => $"b:{timestamp}:{number}";

    public static bool TryParse(ReadOnlySpan<byte> frame, out long timestamp, out long number)
    {
        timestamp = number = 0;
        var at = frame.IndexOf(Needle);
        if (at < 0)
        {
            return false;
        }
        var rest = frame[(at + Needle.Length)..];
        if (!Utf8Parser.TryParse(rest, out timestamp, out var used) || used >= rest.Length || rest[used] != (byte)':')
        {
            return false;
        }
        return Utf8Parser.TryParse(rest[(used + 1)..], out number, out _);
    }
}

/// <summary>The service's REST API, over one pooled HttpClient.</summary>
public sealed class ChatApi : IDisposable
{
    public ChatApi(Uri baseUrl, int connections)
    {
        Http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = connections,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
            UseCookies = false,
            UseProxy = false,
            AutomaticDecompression = DecompressionMethods.None,
        })
        {
            BaseAddress = baseUrl,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public HttpClient Http { get; }

    public async Task<Guid> CreateGroupAsync(User owner, string name, IEnumerable<Guid> members, CancellationToken cancellationToken = default)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object>
        {
            ["kind"] = "group",
            ["name"] = name,
            ["member_ids"] = members.ToArray(),
        });
        using var response = await PostAsync("/api/v1/conversations", owner.Token, body, cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"Creating a conversation answered {(int)response.StatusCode}: {text}");
        }
        using var json = JsonDocument.Parse(text);
        return json.RootElement.GetProperty("id").GetGuid();
    }

    public static byte[] MessageBody(string content) => Encoding.UTF8.GetBytes($"{{\"content\":\"{content}\"}}");

    /// <summary>Posts a text message; throws unless the service answers 201.</summary>
    public async Task SendAsync(User sender, Guid conversationId, string content, CancellationToken cancellationToken)
    {
        using var response = await PostAsync($"/api/v1/conversations/{conversationId}/messages", sender.Token, MessageBody(content), cancellationToken);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"Send answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }
        await response.Content.CopyToAsync(Stream.Null, cancellationToken);
    }

    public async Task<HttpResponseMessage> PostAsync(string path, string? token, byte[] body, CancellationToken cancellationToken, HttpMethod? method = null)
    {
        using var request = new HttpRequestMessage(method ?? HttpMethod.Post, path) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        return await Http.SendAsync(request, HttpCompletionOption.ResponseContentRead, cancellationToken);
    }

    /// <summary>Expected: a 2xx answer; the body is read and dropped.</summary>
    public async Task PostOkAsync(string path, string? token, byte[] body, CancellationToken cancellationToken, HttpMethod? method = null)
    {
        using var response = await PostAsync(path, token, body, cancellationToken, method);
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"{path} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
        }
    }

    /// <summary>
    /// Reads the Prometheus text at /metrics into name → value (labels dropped, values of one name summed), only the
    /// series whose line contains <paramref name="only"/> when given (a label value).
    /// </summary>
    public async Task<Dictionary<string, double>> MetricsAsync(string? only = null, CancellationToken cancellationToken = default)
    {
        var text = await Http.GetStringAsync("/metrics", cancellationToken);
        var values = new Dictionary<string, double>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#' || (only is not null && !line.Contains(only, StringComparison.Ordinal)))
            {
                continue;
            }
            var space = line.LastIndexOf(' ');
            var brace = line.IndexOf('{');
            var name = line[..(brace > 0 && brace < space ? brace : space)];
            if (double.TryParse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture, out var value))
            {
                values[name] = values.GetValueOrDefault(name) + value;
            }
        }
        return values;
    }

    public void Dispose() => Http.Dispose();
}

/// <summary>One WebSocket client; every frame after <c>ready</c> goes to <see cref="OnFrame"/> with its arrival time.</summary>
public sealed class Watcher : IAsyncDisposable
{
    private readonly ClientWebSocket _socket = new();
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;

    public Watcher(Action<ReadOnlySpan<byte>, long> onFrame) => OnFrame = onFrame;

    public Action<ReadOnlySpan<byte>, long> OnFrame { get; }

    public string? Failure { get; private set; }

    public static async Task<Watcher> ConnectAsync(Uri baseUrl, string path, string? token, Action<ReadOnlySpan<byte>, long> onFrame, CancellationToken cancellationToken)
    {
        var watcher = new Watcher(onFrame);
        if (token is not null)
        {
            watcher._socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
        }
        watcher._socket.Options.KeepAliveInterval = TimeSpan.Zero;
        var uri = new Uri(new Uri(baseUrl.ToString().Replace("http", "ws", StringComparison.Ordinal)), path);
        await watcher._socket.ConnectAsync(uri, cancellationToken);
        var buffer = new byte[2048];
        var (count, _) = await watcher.ReceiveAsync(buffer, cancellationToken);
        if (buffer.AsSpan(0, count).IndexOf("\"type\":\"ready\""u8) < 0)
        {
            throw new InvalidOperationException("The first frame was not ready: " + Encoding.UTF8.GetString(buffer, 0, count));
        }
        watcher._loop = Task.Run(() => watcher.LoopAsync(buffer));
        return watcher;
    }

    private async Task<(int Count, byte[] Buffer)> ReceiveAsync(byte[] buffer, CancellationToken cancellationToken)
    {
        var received = 0;
        ValueWebSocketReceiveResult result;
        do
        {
            if (received == buffer.Length)
            {
                Array.Resize(ref buffer, buffer.Length * 2);
            }
            result = await _socket.ReceiveAsync(buffer.AsMemory(received), cancellationToken);
            received += result.Count;
            if (result.MessageType == WebSocketMessageType.Close)
            {
                throw new WebSocketException($"closed by the server: {_socket.CloseStatus} {_socket.CloseStatusDescription}");
            }
        }
        while (!result.EndOfMessage);
        return (received, buffer);
    }

    private async Task LoopAsync(byte[] buffer)
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                (var count, buffer) = await ReceiveAsync(buffer, _stop.Token);
                var now = Stopwatch.GetTimestamp();
                OnFrame(buffer.AsSpan(0, count), now);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or ObjectDisposedException)
        {
            if (!_stop.IsCancellationRequested)
            {
                Failure = ex.Message;
            }
        }
    }

    private readonly SemaphoreSlim _sendLock = new(1, 1);

    public async Task SendAsync(ReadOnlyMemory<byte> frame, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken);
        try
        {
            await _socket.SendAsync(frame, WebSocketMessageType.Text, true, cancellationToken);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try
        {
            if (_socket.State == WebSocketState.Open)
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, timeout.Token);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or ObjectDisposedException)
        {
            // gone already
        }
        _socket.Abort();
        await _loop;
        _socket.Dispose();
        _stop.Dispose();
    }
}
