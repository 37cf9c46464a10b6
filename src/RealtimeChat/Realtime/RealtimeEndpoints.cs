using System.Buffers;
using System.Net.WebSockets;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Timeouts;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Realtime;

public static class RealtimeEndpoints
{
    public static IEndpointConventionBuilder MapRealtime(this IEndpointRouteBuilder routes) =>
        routes.MapGet("/ws", async Task<IResult> (HttpContext context, ClaimsPrincipal user, RealtimeSession session) =>
        {
            if (!context.WebSockets.IsWebSocketRequest)
            {
                return Problems.Create(StatusCodes.Status400BadRequest, "websocket_required", "Connect with a WebSocket upgrade request.");
            }
            await session.RunAsync(context, user.UserId());
            return Results.Empty;
        })
        .RequireAuthorization()
        .RateLimited(RateLimitClass.Reads)
        .WithTags("Realtime")
        .WithSummary("Live events (bearer token in the Authorization header or the access_token query)");
}

/// <summary>Runs one accepted WebSocket: subscriptions, the writer, and the client's frames (resume, typing, ping).</summary>
public sealed class RealtimeSession(RealtimeHub hub, EventReplayer replayer, IOptions<RealtimeOptions> options, ILogger<RealtimeSession> logger)
{
    // How long a closing session waits for a send in progress before it aborts the socket.
    private static readonly TimeSpan WriterStopTimeout = TimeSpan.FromSeconds(2);

    public async Task RunAsync(HttpContext context, Guid userId)
    {
        var settings = options.Value;
        var (socket, batching) = await AcceptAsync(context, settings);
        using var _ = socket;
        var connection = new ChatConnection(userId, socket, settings.SendQueueLimit, batching);
        var aborted = context.RequestAborted;
        try
        {
            await hub.AttachAsync(connection, aborted);
            connection.Send(OutboundFrame.Control(new ReadyFrame(userId, connection.Id)));
            await ReadAsync(connection, aborted);
            connection.Close("client_closed");
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
            connection.Close("connection_lost");
        }
        finally
        {
            connection.Close("closed");
            // The writer must have stopped before the close frame goes out: a WebSocket takes one send at a time.
            var writer = connection.WriterStoppedAsync();
            if (!writer.IsCompleted && await Task.WhenAny(writer, Task.Delay(WriterStopTimeout)) != writer)
            {
                socket.Abort();
                await writer;
            }
            hub.Detach(connection);
            await CloseAsync(socket, connection.CloseReason);
        }
    }

    /// <summary>
    /// Accepts the upgrade over a <see cref="FrameBatchingStream"/>, so the writer can send a backlog in one socket
    /// write. The handshake is ASP.NET Core's (RFC 6455 section 4.2.2: no subprotocol, no compression); WebSockets
    /// over HTTP/2 use the framework's accept, without batching.
    /// </summary>
    private static async Task<(WebSocket Socket, FrameBatchingStream? Batching)> AcceptAsync(HttpContext context, RealtimeOptions settings)
    {
        var upgrade = context.Features.Get<IHttpUpgradeFeature>();
        if (upgrade is not { IsUpgradableRequest: true })
        {
            var socket = await context.WebSockets.AcceptWebSocketAsync(new WebSocketAcceptContext
            {
                KeepAliveInterval = settings.KeepAliveInterval,
                KeepAliveTimeout = settings.KeepAliveTimeout,
            });
            return (socket, null);
        }

        var headers = context.Response.Headers;
        headers.Connection = HeaderNames.Upgrade;
        headers.Upgrade = "websocket";
        headers.SecWebSocketAccept = AcceptKey(context.Request.Headers.SecWebSocketKey.ToString());
        var stream = new FrameBatchingStream(context, await upgrade.UpgradeAsync());
        context.Features.Get<IHttpRequestTimeoutFeature>()?.DisableTimeout();
        var batchingSocket = WebSocket.CreateFromStream(stream, new WebSocketCreationOptions
        {
            IsServer = true,
            KeepAliveInterval = settings.KeepAliveInterval,
            KeepAliveTimeout = settings.KeepAliveTimeout,
        });
        stream.Socket = batchingSocket;
        return (batchingSocket, stream);
    }

    private static string AcceptKey(string key)
    {
        Span<byte> hash = stackalloc byte[SHA1.HashSizeInBytes];
        SHA1.HashData(Encoding.ASCII.GetBytes(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"), hash);
        return Convert.ToBase64String(hash);
    }

    private async Task ReadAsync(ChatConnection connection, CancellationToken aborted)
    {
        var maxFrameBytes = options.Value.MaxClientFrameBytes;
        Dictionary<Guid, long>? lastTyping = null;
        while (true)
        {
            // Wait for the next message with no buffer at all, and borrow one only while a message is read: an idle
            // connection then holds none, which matters at 10,000 connections.
            var result = await connection.Socket.ReceiveAsync(Memory<byte>.Empty, CancellationToken.None);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                return;
            }
            var buffer = ArrayPool<byte>.Shared.Rent(maxFrameBytes);
            ClientFrame? frame;
            bool malformed;
            try
            {
                var length = 0;
                while (!result.EndOfMessage)
                {
                    if (length == maxFrameBytes)
                    {
                        connection.Close("frame_too_large");
                        return;
                    }
                    result = await connection.Socket.ReceiveAsync(buffer.AsMemory(length, maxFrameBytes - length), CancellationToken.None);
                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        return;
                    }
                    length += result.Count;
                }
                (frame, malformed) = Parse(buffer.AsSpan(0, length));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            if (malformed)
            {
                connection.Send(OutboundFrame.Control(new ErrorFrame("malformed_frame", "Frames are JSON objects with a type.")));
                continue;
            }
            if (frame is { Type: "resume", Conversations: { } conversations })
            {
                foreach (var (conversationId, afterSeq) in conversations)
                {
                    await ResumeAsync(connection, conversationId, Math.Max(0, afterSeq), aborted);
                }
                continue;
            }
            Handle(connection, frame, ref lastTyping);
        }
    }

    private static (ClientFrame? Frame, bool Malformed) Parse(ReadOnlySpan<byte> json)
    {
        try
        {
            return (JsonSerializer.Deserialize<ClientFrame>(json, ChatJson.Options), false);
        }
        catch (JsonException)
        {
            return (null, true);
        }
    }

    private void Handle(ChatConnection connection, ClientFrame? frame, ref Dictionary<Guid, long>? lastTyping)
    {
        switch (frame?.Type)
        {
            case "ping":
                connection.Send(OutboundFrame.Control(new PongFrame()));
                break;
            case "typing" when frame.ConversationId is { } conversationId:
                if (!connection.IsSubscribed(conversationId))
                {
                    connection.Send(OutboundFrame.Control(new ErrorFrame("conversation_not_found", "No such conversation.", conversationId)));
                    break;
                }
                var now = Environment.TickCount64;
                lastTyping ??= [];
                if (!lastTyping.TryGetValue(conversationId, out var last) || now - last >= options.Value.TypingThrottle.TotalMilliseconds)
                {
                    lastTyping[conversationId] = now;
                    hub.Typing(connection.UserId, conversationId);
                }
                break;
            default:
                connection.Send(OutboundFrame.Control(new ErrorFrame("unknown_frame", "Known frames: resume, typing, ping.")));
                break;
        }
    }

    private async Task ResumeAsync(ChatConnection connection, Guid conversationId, long afterSeq, CancellationToken cancellationToken)
    {
        if (!connection.BeginResume(conversationId))
        {
            connection.Send(OutboundFrame.Control(new ErrorFrame("conversation_not_found", "No such conversation.", conversationId)));
            return;
        }
        var limit = options.Value.MaxResumeEvents;
        try
        {
            var (frames, latest) = await replayer.LoadAsync(conversationId, afterSeq, limit + 1, cancellationToken);
            if (frames.Count > limit)
            {
                connection.CompleteResume(conversationId, latest, [], OutboundFrame.Control(new ResyncFrame(conversationId, latest, "gap_too_large")));
                return;
            }
            var replayed = connection.CompleteResume(conversationId, afterSeq, frames, OutboundFrame.Control(new ResumedFrame(conversationId, afterSeq, frames.Count)));
            ChatMetrics.EventsReplayed.Inc(replayed);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            logger.LogError(ex, "Resume of {ConversationId} for {UserId} failed", conversationId, connection.UserId);
            connection.CompleteResume(conversationId, afterSeq, [], OutboundFrame.Control(new ResyncFrame(conversationId, 0, "resume_failed")));
        }
    }

    private static async Task CloseAsync(WebSocket socket, string? reason)
    {
        if (socket.State is not (WebSocketState.Open or WebSocketState.CloseReceived))
        {
            return;
        }
        var status = reason switch
        {
            "frame_too_large" => WebSocketCloseStatus.MessageTooBig,
            _ => WebSocketCloseStatus.NormalClosure,
        };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await socket.CloseOutputAsync(status, reason, timeout.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
            socket.Abort();
        }
    }
}
