using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;

namespace RealtimeChat.Tests.Infrastructure;

public sealed record LiveFrame(string Type, Guid? ConversationId, long Seq, JsonElement Json)
{
    public JsonElement Data => Json.GetProperty("data");
}

/// <summary>A client WebSocket whose incoming frames are collected in order for assertions.</summary>
public sealed class LiveSocket : IAsyncDisposable
{
    private static readonly TimeSpan DefaultWait = TimeSpan.FromSeconds(10);
    private readonly Channel<LiveFrame> _frames = Channel.CreateUnbounded<LiveFrame>();
    private readonly Task _receiving;

    public LiveSocket(ClientWebSocket socket)
    {
        Socket = socket;
        _receiving = ReceiveAsync();
    }

    public ClientWebSocket Socket { get; }

    public WebSocketCloseStatus? CloseStatus => Socket.CloseStatus;

    public Task SendAsync(object frame) =>
        Socket.SendAsync(JsonSerializer.SerializeToUtf8Bytes(frame, ChatJson.Options), WebSocketMessageType.Text, true, CancellationToken.None);

    /// <summary>Returns the next frame matching <paramref name="match"/>, skipping others; fails after the timeout.</summary>
    public async Task<LiveFrame> WaitForAsync(Func<LiveFrame, bool> match, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? DefaultWait);
        try
        {
            while (true)
            {
                var frame = await _frames.Reader.ReadAsync(cts.Token);
                if (match(frame))
                {
                    return frame;
                }
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException("No matching WebSocket frame arrived in time.");
        }
        catch (ChannelClosedException)
        {
            throw new InvalidOperationException($"The WebSocket closed ({Socket.CloseStatus}: {Socket.CloseStatusDescription}) before a matching frame.");
        }
    }

    /// <summary>All frames that arrive within <paramref name="window"/>.</summary>
    public async Task<List<LiveFrame>> CollectAsync(TimeSpan window)
    {
        var frames = new List<LiveFrame>();
        using var cts = new CancellationTokenSource(window);
        try
        {
            while (true)
            {
                frames.Add(await _frames.Reader.ReadAsync(cts.Token));
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ChannelClosedException)
        {
            return frames;
        }
    }

    /// <summary>Completes when the server has closed the socket.</summary>
    public async Task WaitClosedAsync(TimeSpan? timeout = null)
    {
        await _receiving.WaitAsync(timeout ?? DefaultWait);
    }

    private async Task ReceiveAsync()
    {
        var buffer = new byte[1 << 20];
        try
        {
            while (Socket.State == WebSocketState.Open)
            {
                var length = 0;
                WebSocketReceiveResult result;
                do
                {
                    result = await Socket.ReceiveAsync(new ArraySegment<byte>(buffer, length, buffer.Length - length), CancellationToken.None);
                    length += result.Count;
                } while (!result.EndOfMessage);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }
                var json = JsonDocument.Parse(Encoding.UTF8.GetString(buffer, 0, length)).RootElement.Clone();
                _frames.Writer.TryWrite(new LiveFrame(
                    json.GetProperty("type").GetString()!,
                    json.TryGetProperty("conversation_id", out var c) && c.ValueKind == JsonValueKind.String ? c.GetGuid() : null,
                    json.TryGetProperty("seq", out var s) ? s.GetInt64() : 0,
                    json));
            }
        }
        catch (WebSocketException)
        {
        }
        finally
        {
            _frames.Writer.TryComplete();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Socket.State == WebSocketState.Open)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try
            {
                await Socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", cts.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
            {
            }
        }
        Socket.Dispose();
    }
}
