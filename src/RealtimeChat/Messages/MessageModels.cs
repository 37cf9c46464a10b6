namespace RealtimeChat.Messages;

public sealed record SendMessageRequest(string? Content, string? ClientMessageId, Guid? ReplyTo);

public sealed record EditMessageRequest(string? Content);

public sealed record MarkReadRequest(long? Seq);

public sealed record MediaDto(Guid Id, string ContentType, long SizeBytes, int? DurationMs, string? FileName, string Url);

public sealed record ReactionSummary(string Reaction, int Count, IReadOnlyList<Guid> UserIds);

public enum MatrixDeliveryState
{
    Pending,
    Sent,
    Failed,
}

/// <summary>Where the message stands on Matrix: waiting in the outbox, in the room (with its event id), or parked.</summary>
public sealed record MatrixDelivery(MatrixDeliveryState State, string? EventId, string? Error);

public sealed record MessageDto(
    Guid Id,
    Guid ConversationId,
    long Seq,
    Guid SenderId,
    string Type,
    string? Content,
    MediaDto? Media,
    Guid? ReplyTo,
    string? ClientMessageId,
    DateTimeOffset CreatedAt,
    DateTimeOffset? EditedAt,
    DateTimeOffset? DeletedAt,
    IReadOnlyList<ReactionSummary> Reactions,
    MatrixDelivery? Matrix);

public sealed record MessagePage(IReadOnlyList<MessageDto> Messages, bool HasMore);

public static class MessageKinds
{
    public const string Text = "text";
    public const string Audio = "audio";
    public const string Image = "image";
    public const string File = "file";
}

internal sealed class MessageRow
{
    public Guid Id { get; init; }
    public Guid ConversationId { get; init; }
    public long Seq { get; init; }
    public Guid SenderId { get; init; }
    public string Kind { get; init; } = "";
    public byte[]? Content { get; init; }
    public Guid? MediaId { get; init; }
    public Guid? ReplyTo { get; init; }
    public string? ClientMessageId { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? EditedAt { get; init; }
    public DateTimeOffset? DeletedAt { get; init; }
    public string? MediaContentType { get; init; }
    public long? MediaSizeBytes { get; init; }
    public int? MediaDurationMs { get; init; }
    public string? MediaFileName { get; init; }
    public string? MediaStorageKey { get; init; }

    public const string Select =
        """
        SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.kind, m.content, m.media_id, m.reply_to,
               m.client_message_id, m.created_at, m.edited_at, m.deleted_at,
               md.content_type AS media_content_type, md.size_bytes AS media_size_bytes,
               md.duration_ms AS media_duration_ms, md.file_name AS media_file_name,
               md.storage_key AS media_storage_key
          FROM messages m LEFT JOIN media md ON md.id = m.media_id
        """;
}

internal sealed class ReactionRow
{
    public Guid MessageId { get; init; }
    public Guid UserId { get; init; }
    public string Reaction { get; init; } = "";
    public DateTimeOffset CreatedAt { get; init; }
}
