using System.Text.Json;
using System.Text.Json.Serialization;

namespace RealtimeChat.Realtime;

/// <summary>A serialised server→client frame; conversation events carry their conversation and sequence number.</summary>
public sealed record OutboundFrame(Guid? ConversationId, long Seq, byte[] Payload, long PublishedAt)
{
    public static OutboundFrame Control(object message) =>
        new(null, 0, JsonSerializer.SerializeToUtf8Bytes(message, ChatJson.Options), 0);
}

/// <summary>The JSON shape of every conversation event on the socket.</summary>
public sealed record EventFrame(string Type, Guid ConversationId, long Seq, Guid? ActorId, DateTimeOffset CreatedAt, object Data);

public sealed record TypingFrame(Guid ConversationId, Guid UserId)
{
    public string Type => ChatEventTypes.Typing;
}

public sealed record ReadyFrame(Guid UserId, Guid ConnectionId)
{
    public string Type => "ready";
}

/// <summary>Too much was missed: page history over REST from <c>latest_seq</c> backwards, then continue live.</summary>
public sealed record ResyncFrame(Guid ConversationId, long LatestSeq, string Reason)
{
    public string Type => "resync";
}

public sealed record ResumedFrame(Guid ConversationId, long FromSeq, int Replayed)
{
    public string Type => "resumed";
}

/// <param name="RetryAfterMs">With <c>rate_limited</c>: how long to wait before sending the refused frame again.</param>
public sealed record ErrorFrame(
    string Code, string Detail, Guid? ConversationId = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? RetryAfterMs = null)
{
    public string Type => "error";
}

/// <summary>The answer to an accepted auth frame: the connection now ends when the new token expires.</summary>
public sealed record AuthenticatedFrame(DateTimeOffset ExpiresAt)
{
    public string Type => "authenticated";
}

public sealed record PongFrame
{
    public string Type => "pong";
}

/// <summary>What clients may send: <c>resume</c> (last seen seq per conversation), <c>typing</c>, <c>ping</c>, <c>auth</c> (a fresh token).</summary>
public sealed record ClientFrame(string? Type, Guid? ConversationId, Dictionary<Guid, long>? Conversations, string? Token = null);
