using System.Buffers;
using System.Net.WebSockets;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.Extensions.Options;
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
        .WithTags("Realtime")
        .WithSummary("Live events (bearer token in the Authorization header or the access_token query)");
}

/// <summary>Runs one accepted WebSocket: subscriptions, the writer, and the client's frames (resume, typing, ping).</summary>
public sealed class RealtimeSession(RealtimeHub hub, EventReplayer replayer, IOptions<RealtimeOptions> options, ILogger<RealtimeSession> logger)
{
    private const int SmallFrameBytes = 1024;

    public async Task RunAsync(HttpContext context, Guid userId)
    {
        var settings = options.Value;
        using var socket = await context.WebSockets.AcceptWebSocketAsync(new WebSocketAcceptContext
        {
            KeepAliveInterval = settings.KeepAliveInterval,
            KeepAliveTimeout = settings.KeepAliveTimeout,
        });
        var connection = new ChatConnection(userId, socket, settings.SendQueueLimit);
        var aborted = context.RequestAborted;
        Task? writer = null;
        try
        {
            await hub.AttachAsync(connection, aborted);
            connection.Send(OutboundFrame.Control(new ReadyFrame(userId, connection.Id)));
            writer = connection.RunWriterAsync(aborted);
            await ReadAsync(connection, aborted);
            connection.Abort("client_closed");
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
            connection.Abort("connection_lost");
        }
        finally
        {
            // The writer must have stopped before the close frame goes out: a WebSocket takes one send at a time.
            connection.Abort("closed");
            if (writer is not null)
            {
                await writer;
            }
            hub.Detach(connection);
            await CloseAsync(socket, connection.CloseReason);
        }
    }

    private async Task ReadAsync(ChatConnection connection, CancellationToken aborted)
    {
        var settings = options.Value;
        // Client frames are small (typing, ping, a resume list): a connection keeps only a small buffer for its whole
        // life and borrows a large one for the rare frame that does not fit, which matters at 10,000 connections.
        var small = new byte[SmallFrameBytes];
        var lastTyping = new Dictionary<Guid, long>();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(aborted, connection.Closed);
        try
        {
            while (!linked.IsCancellationRequested)
            {
                var buffer = small;
                byte[]? borrowed = null;
                try
                {
                    var length = 0;
                    ValueWebSocketReceiveResult result;
                    do
                    {
                        if (length == buffer.Length)
                        {
                            if (length >= settings.MaxClientFrameBytes)
                            {
                                connection.Abort("frame_too_large");
                                return;
                            }
                            borrowed = ArrayPool<byte>.Shared.Rent(settings.MaxClientFrameBytes);
                            buffer.AsSpan(0, length).CopyTo(borrowed);
                            buffer = borrowed;
                        }
                        var room = Math.Min(buffer.Length, settings.MaxClientFrameBytes) - length;
                        result = await connection.Socket.ReceiveAsync(buffer.AsMemory(length, room), linked.Token);
                        length += result.Count;
                    } while (!result.EndOfMessage && result.MessageType != WebSocketMessageType.Close);

                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        return;
                    }
                    await HandleAsync(connection, buffer.AsMemory(0, length), lastTyping, linked.Token);
                }
                finally
                {
                    if (borrowed is not null)
                    {
                        ArrayPool<byte>.Shared.Return(borrowed);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task HandleAsync(ChatConnection connection, ReadOnlyMemory<byte> json, Dictionary<Guid, long> lastTyping, CancellationToken cancellationToken)
    {
        ClientFrame? frame;
        try
        {
            frame = JsonSerializer.Deserialize<ClientFrame>(json.Span, ChatJson.Options);
        }
        catch (JsonException)
        {
            connection.Send(OutboundFrame.Control(new ErrorFrame("malformed_frame", "Frames are JSON objects with a type.")));
            return;
        }

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
                if (!lastTyping.TryGetValue(conversationId, out var last) || now - last >= options.Value.TypingThrottle.TotalMilliseconds)
                {
                    lastTyping[conversationId] = now;
                    hub.Typing(connection.UserId, conversationId);
                }
                break;
            case "resume" when frame.Conversations is { } conversations:
                foreach (var (conversationId, afterSeq) in conversations)
                {
                    await ResumeAsync(connection, conversationId, Math.Max(0, afterSeq), cancellationToken);
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
            "slow_consumer" => WebSocketCloseStatus.PolicyViolation,
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
