using System.Buffers;
using System.Diagnostics;
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
            await session.RunAsync(context, user.UserId(), AccessTokenValidator.ExpiresAt(user));
            return Results.Empty;
        })
        .RequireAuthorization()
        .RateLimited(RateLimitClass.Reads)
        .WithTags("Realtime")
        .WithSummary("Live events (bearer token in the Authorization header or the access_token query)");
}

/// <summary>Runs one accepted WebSocket: subscriptions, the writer, and the client's frames (resume, typing, ping, auth).</summary>
public sealed class RealtimeSession(
    RealtimeHub hub, EventReplayer replayer, AccessTokenValidator tokens, TypingThrottle typingThrottle, ChatRateLimits rateLimits,
    TimeProvider time, IOptions<RealtimeOptions> options, ILogger<RealtimeSession> logger)
{
    // How long a closing session waits for a send in progress before it aborts the socket.
    private static readonly TimeSpan WriterStopTimeout = TimeSpan.FromSeconds(2);

    /// <param name="expiresAt">When the handshake's token expires: the socket ends then unless an auth frame renews it.</param>
    public async Task RunAsync(HttpContext context, Guid userId, DateTimeOffset? expiresAt)
    {
        var settings = options.Value;
        if (!hub.TryReserveSocket(userId, settings.MaxConnectionsPerUser))
        {
            // Accepted only to be closed with a code: a browser never sees why a refused handshake failed.
            var (refused, _) = await AcceptAsync(context, settings);
            using (refused)
            {
                ChatMetrics.WebSocketDisconnects.WithLabels("too_many_connections").Inc();
                await CloseAsync(refused, "too_many_connections");
            }
            return;
        }
        try
        {
            await RunAcceptedAsync(context, userId, expiresAt, settings);
        }
        finally
        {
            hub.ReleaseSocket(userId);
        }
    }

    private async Task RunAcceptedAsync(HttpContext context, Guid userId, DateTimeOffset? expiresAt, RealtimeOptions settings)
    {
        var (socket, batching) = await AcceptAsync(context, settings);
        using var _ = socket;
        var connection = new ChatConnection(userId, socket, settings.SendQueueLimit, batching);
        var lifetime = new TokenLifetime(time, () => ExpireAsync(connection));
        var aborted = context.RequestAborted;
        try
        {
            if (expiresAt is { } expiry)
            {
                lifetime.ExpireAt(expiry);
            }
            await hub.AttachAsync(connection, aborted);
            connection.Send(OutboundFrame.Control(new ReadyFrame(userId, connection.Id)));
            await ReadAsync(connection, lifetime, aborted);
            connection.Close("client_closed");
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
            connection.Close("connection_lost");
        }
        finally
        {
            // An expiry in progress is sending its close frame; a second close must not overlap it.
            await lifetime.EndAsync();
            connection.Close("closed");
            await StopWriterAsync(connection);
            hub.Detach(connection);
            await CloseAsync(socket, connection.CloseReason);
        }
    }

    /// <summary>The writer must have stopped before a close frame goes out: a WebSocket takes one send at a time.</summary>
    private static async Task StopWriterAsync(ChatConnection connection)
    {
        var writer = connection.WriterStoppedAsync();
        if (!writer.IsCompleted && await Task.WhenAny(writer, Task.Delay(WriterStopTimeout)) != writer)
        {
            connection.Socket.Abort();
            await writer;
        }
    }

    /// <summary>
    /// Ends a connection whose token expired with <see cref="CloseCodes.TokenExpired"/>. The client's answering close
    /// frame ends the reader; one that never answers is aborted.
    /// </summary>
    private async Task ExpireAsync(ChatConnection connection)
    {
        try
        {
            connection.Close("token_expired");
            await StopWriterAsync(connection);
            await CloseAsync(connection.Socket, "token_expired");
            var deadline = Stopwatch.GetTimestamp() + (long)(WriterStopTimeout.TotalSeconds * Stopwatch.Frequency);
            while (connection.Socket.State != WebSocketState.Closed && Stopwatch.GetTimestamp() < deadline)
            {
                await Task.Delay(50);
            }
            if (connection.Socket.State != WebSocketState.Closed)
            {
                connection.Socket.Abort();
            }
        }
        catch (Exception ex)
        {
            logger.LogDebug(ex, "Closing the expired WebSocket {ConnectionId} failed", connection.Id);
            connection.Socket.Abort();
        }
    }

    /// <summary>
    /// An auth frame: a valid token for the same user moves the connection's end to the new token's expiry; an
    /// invalid one is answered with an error and changes nothing; another user's token ends the connection.
    /// </summary>
    /// <returns>False when the connection must end.</returns>
    private async Task<bool> RefreshAsync(ChatConnection connection, TokenLifetime lifetime, string? token, CancellationToken cancellationToken)
    {
        (Guid UserId, DateTimeOffset ExpiresAt)? validated = null;
        try
        {
            validated = string.IsNullOrWhiteSpace(token) ? null : await tokens.ValidateAsync(token, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // E.g. the identity provider's keys could not be fetched: the token cannot be accepted now, the connection
            // keeps the one it has.
            logger.LogWarning(ex, "Could not validate a WebSocket auth frame's token");
        }
        // Validation allows a clock skew, so that a handshake from a client whose clock runs behind still succeeds. A
        // renewal must not: a token past its exp would move the connection's end into the past and close it at once.
        if (validated is not { } fresh || fresh.ExpiresAt <= time.GetUtcNow())
        {
            connection.Send(OutboundFrame.Control(new ErrorFrame("invalid_token", "The token is invalid or expired; the connection keeps its current token.")));
            return true;
        }
        if (fresh.UserId != connection.UserId)
        {
            connection.Send(OutboundFrame.Control(new ErrorFrame("token_user_mismatch", "The token is for another user.")));
            // Let the error frame out before the close.
            await StopWriterAsync(connection);
            connection.Close("token_refused");
            return false;
        }
        lifetime.ExpireAt(fresh.ExpiresAt);
        connection.Send(OutboundFrame.Control(new AuthenticatedFrame(fresh.ExpiresAt)));
        return true;
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

    private async Task ReadAsync(ChatConnection connection, TokenLifetime lifetime, CancellationToken aborted)
    {
        var maxFrameBytes = options.Value.MaxClientFrameBytes;
        while (true)
        {
            // Wait for the next message with no buffer at all, and borrow one only while a message is read: an idle
            // connection then holds none, which matters at 10,000 connections.
            var result = await connection.Socket.ReceiveAsync(Memory<byte>.Empty, CancellationToken.None);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                return;
            }
            if (result.MessageType == WebSocketMessageType.Binary)
            {
                // The protocol is JSON in text frames; answering binary ones would make them a second, unspecified
                // protocol clients come to rely on.
                connection.Close("binary_frame");
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
                if (!TryChargeResume(connection, conversations.Count))
                {
                    continue;
                }
                foreach (var (conversationId, afterSeq) in conversations)
                {
                    await ResumeAsync(connection, conversationId, Math.Max(0, afterSeq), aborted);
                }
                continue;
            }
            if (frame is { Type: "auth" })
            {
                if (!await RefreshAsync(connection, lifetime, frame.Token, aborted))
                {
                    return;
                }
                continue;
            }
            Handle(connection, frame);
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

    private void Handle(ChatConnection connection, ClientFrame? frame)
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
                if (typingThrottle.TryPass(connection.UserId, conversationId))
                {
                    hub.Typing(connection.UserId, conversationId);
                }
                break;
            default:
                connection.Send(OutboundFrame.Control(new ErrorFrame("unknown_frame", "Known frames: resume, typing, ping, auth.")));
                break;
        }
    }

    /// <summary>
    /// A resume runs a replay query per conversation, as paging history over REST does, so it draws on the same reads
    /// budget: otherwise a resume loop is an unmetered way to make the database work. One unit per 100 conversations
    /// (at least one), so that a reconnect resuming all of a user's conversations fits the burst.
    /// </summary>
    /// <returns>False when refused: the error frame is sent and nothing of the frame is replayed.</returns>
    private bool TryChargeResume(ChatConnection connection, int conversations)
    {
        var permits = Math.Max(1, (conversations + 99) / 100);
        if (rateLimits.TryTake(connection.UserId, RateLimitClass.Reads, permits, out var retryAfter))
        {
            return true;
        }
        var retryAfterMs = Math.Max(1, (long)Math.Ceiling(retryAfter.TotalMilliseconds));
        connection.Send(OutboundFrame.Control(new ErrorFrame(
            "rate_limited", $"Too many reads; send the resume again after retry_after_ms ({retryAfterMs} ms).", RetryAfterMs: retryAfterMs)));
        return false;
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
            "binary_frame" => WebSocketCloseStatus.InvalidMessageType,
            "token_expired" => (WebSocketCloseStatus)CloseCodes.TokenExpired,
            "token_refused" => (WebSocketCloseStatus)CloseCodes.TokenRefused,
            "too_many_connections" => (WebSocketCloseStatus)CloseCodes.TooManyConnections,
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

/// <summary>
/// Ends a connection when its token expires, as REST refuses the token from then on. One timer per connection,
/// moved by each accepted auth frame.
/// </summary>
internal sealed class TokenLifetime(TimeProvider time, Func<Task> expire)
{
    // Timers take at most about 49 days; a longer-lived token is checked again then.
    private static readonly TimeSpan LongestWait = TimeSpan.FromDays(30);

    private readonly Lock _lock = new();
    private ITimer? _timer;
    private DateTimeOffset _expiresAt;
    private Task? _expiring;
    private bool _ended;

    public void ExpireAt(DateTimeOffset expiresAt)
    {
        lock (_lock)
        {
            if (_ended || _expiring is not null)
            {
                return;
            }
            _expiresAt = expiresAt;
            ScheduleLocked();
        }
    }

    /// <summary>Stops the timer and waits for an expiry already under way.</summary>
    public Task EndAsync()
    {
        lock (_lock)
        {
            _ended = true;
            _timer?.Dispose();
            return _expiring ?? Task.CompletedTask;
        }
    }

    private void ScheduleLocked()
    {
        var wait = _expiresAt - time.GetUtcNow();
        wait = wait < TimeSpan.Zero ? TimeSpan.Zero : wait > LongestWait ? LongestWait : wait;
        _timer?.Dispose();
        _timer = time.CreateTimer(_ => Fire(), null, wait, Timeout.InfiniteTimeSpan);
    }

    private void Fire()
    {
        lock (_lock)
        {
            if (_ended || _expiring is not null)
            {
                return;
            }
            if (time.GetUtcNow() < _expiresAt)
            {
                ScheduleLocked();
                return;
            }
            _expiring = Task.Run(expire);
        }
    }
}
