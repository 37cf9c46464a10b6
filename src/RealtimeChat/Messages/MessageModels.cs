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
    public string? MatrixEventId { get; init; }
    public string? MediaContentType { get; init; }
    public long? MediaSizeBytes { get; init; }
    public int? MediaDurationMs { get; init; }
    public string? MediaFileName { get; init; }
    public string? MediaStorageKey { get; init; }
    public string? MatrixOutboxStatus { get; init; }
    public string? MatrixOutboxError { get; init; }

    private const string StoredColumns =
        """
        m.id, m.conversation_id, m.seq, m.sender_id, m.kind, m.content, m.media_id, m.reply_to,
               m.client_message_id, m.created_at, m.edited_at, m.deleted_at, m.matrix_event_id,
               md.content_type AS media_content_type, md.size_bytes AS media_size_bytes,
               md.duration_ms AS media_duration_ms, md.file_name AS media_file_name,
               md.storage_key AS media_storage_key
        """;

    private const string FromMessagesWithMedia = " FROM messages m LEFT JOIN media md ON md.id = m.media_id";

    /// <summary>The stored message and its media, without the delivery state the API adds (what the Matrix bridge reads).</summary>
    public const string SelectStored = "SELECT " + StoredColumns + FromMessagesWithMedia;

    // The outbox is read through scalar subqueries, not a join: a prepared plan made while matrix_outbox was young
    // joined it by scanning the whole table (1.4-3 ms per query at 10,000-20,000 rows).
    public const string Select =
        "SELECT " + StoredColumns +
        """
        ,
               (SELECT o.status FROM matrix_outbox o WHERE o.message_id = m.id AND o.action = 'send_message') AS matrix_outbox_status,
               (SELECT o.last_error FROM matrix_outbox o WHERE o.message_id = m.id AND o.action = 'send_message') AS matrix_outbox_error
        """ + FromMessagesWithMedia;
}

internal sealed class ReactionRow
{
    public Guid MessageId { get; init; }
    public Guid UserId { get; init; }
    public string Reaction { get; init; } = "";
    public DateTimeOffset CreatedAt { get; init; }
}
