using RealtimeChat.Conversations;

namespace RealtimeChat.Realtime;

/// <summary>The event types clients receive on the WebSocket and find in <c>conversation_events</c>.</summary>
public static class ChatEventTypes
{
    public const string MessageNew = "message.new";
    public const string MessageEdited = "message.edited";
    public const string MessageDeleted = "message.deleted";
    public const string ReactionAdded = "reaction.added";
    public const string ReactionRemoved = "reaction.removed";
    public const string ConversationCreated = "conversation.created";
    public const string ConversationUpdated = "conversation.updated";
    public const string MemberAdded = "member.added";
    public const string MemberRemoved = "member.removed";
    public const string MemberUpdated = "member.updated";
    public const string ReadUpdated = "read.updated";
    public const string Typing = "typing";

    /// <summary>Events whose payload is a message, rendered from the (decrypted) row when replayed.</summary>
    public static bool CarriesMessage(string type) => type is MessageNew or MessageEdited;
}

/// <summary>Stored payload of message.new / message.edited: the log keeps the id, never the content.</summary>
public sealed record MessageReference(Guid MessageId);

public sealed record MessageDeleted(Guid MessageId, Guid DeletedBy);

public sealed record ReactionChanged(Guid MessageId, Guid UserId, string Reaction);

public sealed record ConversationCreated(
    Guid Id, ConversationKind Kind, string? Name, Guid CreatedBy, DateTimeOffset CreatedAt, IReadOnlyList<MemberDto> Members);

public sealed record ConversationUpdated(string Name);

public sealed record MemberAdded(MemberDto Member, Guid AddedBy);

public sealed record MemberRemoved(Guid UserId, Guid RemovedBy, bool Left);

public sealed record MemberUpdated(Guid UserId, MemberRole Role, Guid UpdatedBy);

public sealed record ReadUpdated(Guid UserId, long LastReadSeq);
