using System.ComponentModel.DataAnnotations;
using System.Text;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Media;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Messages;

public sealed class MessageOptions
{
    public const string Section = "Messages";

    /// <summary>Largest message body, in UTF-8 bytes.</summary>
    [Range(1, 1_048_576)]
    public int MaxContentBytes { get; set; } = 16 * 1024;

    [Range(1, 1000)]
    public int MaxPageSize { get; set; } = 100;

    /// <summary>
    /// Transactions storing new messages at once (group commit; PostgreSQL only, SQLite has one writer). Each takes
    /// what has queued while the others commit, up to <see cref="MaxSendBatch"/> messages.
    /// </summary>
    [Range(1, 64)]
    public int SendWriters { get; set; } = 4;

    [Range(1, 1000)]
    public int MaxSendBatch { get; set; } = 64;

    /// <summary>Sends a user may make per second (token bucket refill; below 1, one every 1/rate seconds), and the burst above that.</summary>
    [Range(0.001, 100_000)]
    public double SendsPerSecond { get; set; } = 20;

    [Range(1, 100_000)]
    public int SendBurst { get; set; } = 40;
}

/// <summary>A new message's parts, whoever sends it (text endpoint, media upload, the Matrix bridge).</summary>
/// <param name="Media">The message's file, stored in the message's own transaction.</param>
/// <param name="Origin">Bridged for a message that arrived from another network, naming the event it mirrors.</param>
public sealed record NewMessage(string Kind, string Content, string? ClientMessageId, Guid? ReplyTo, NewMedia? Media = null, EventOrigin Origin = default);

/// <summary>Where a stored message sits, without its content.</summary>
public sealed class StoredMessageRef
{
    public Guid Id { get; init; }
    public long Seq { get; init; }
    public Guid SenderId { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
}

/// <summary>An uploaded (already encrypted and stored) file's row.</summary>
public sealed record NewMedia(Guid Id, string StorageKey, string ContentType, long SizeBytes, int? DurationMs, string? FileName, byte[] WrappedKey)
{
    public MediaDto ToDto() => new(Id, ContentType, SizeBytes, DurationMs, FileName, $"/api/v1/media/{Id}");
}

public sealed class MessageService(
    ChatDatabase database,
    ChatEventPipeline events,
    MessageWriter writer,
    MessageRenderer renderer,
    ContentCipher cipher,
    IMediaStore mediaStore,
    TimeProvider time,
    IOptions<MessageOptions> options,
    ILogger<MessageService> logger)
{
    private const int MaxClientMessageIdLength = 128;
    private const int MaxReactionLength = 64;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public Task<(MessageDto Message, bool Created)> SendTextAsync(Guid userId, Guid conversationId, SendMessageRequest request) =>
        SendAsync(userId, conversationId, new NewMessage(MessageKinds.Text, ValidContent(request.Content), request.ClientMessageId, request.ReplyTo));

    /// <returns>The stored message; Created is false when <c>client_message_id</c> matched an earlier send.</returns>
    public Task<(MessageDto Message, bool Created)> SendAsync(Guid userId, Guid conversationId, NewMessage message)
    {
        if (message.ClientMessageId is { Length: 0 or > MaxClientMessageIdLength })
        {
            throw ApiException.BadRequest("invalid_client_message_id", $"client_message_id must be 1 to {MaxClientMessageIdLength} characters.");
        }
        return writer.SendAsync(userId, conversationId, message);
    }

    public async Task<MessagePage> ListAsync(
        Guid userId, Guid conversationId, long? before, long? after, int? limit, CancellationToken cancellationToken)
    {
        var max = options.Value.MaxPageSize;
        var take = limit ?? Math.Min(50, max);
        if (take < 1 || take > max)
        {
            throw ApiException.BadRequest("invalid_limit", $"limit must be between 1 and {max}.");
        }
        if (before is not null && after is not null)
        {
            throw ApiException.BadRequest("invalid_cursor", "Use either before or after, not both.");
        }

        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.RequireMemberAsync(conversationId, userId);
        // Newest first when paging back (or from the end), oldest first when paging forward; always returned oldest first.
        var sql = after is not null
            ? MessageRow.Select + " WHERE m.conversation_id = @conversationId AND m.seq > @after ORDER BY m.seq LIMIT @take"
            : MessageRow.Select + " WHERE m.conversation_id = @conversationId" + (before is not null ? " AND m.seq < @before" : "") + " ORDER BY m.seq DESC LIMIT @take";
        var rows = (await connection.QueryAsync<MessageRow>(sql, new { conversationId, before, after, take = take + 1 })).AsList();
        var hasMore = rows.Count > take;
        var page = rows.Take(take).OrderBy(r => r.Seq).ToList();
        return new MessagePage(await renderer.RenderAsync(connection, page), hasMore);
    }

    /// <summary>The latest <paramref name="limit"/> messages before <paramref name="beforeSeq"/> that are not deleted, oldest first.</summary>
    public async Task<IReadOnlyList<StoredMessageRef>> RecentAsync(Guid conversationId, long beforeSeq, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var rows = await connection.QueryAsync<StoredMessageRef>(
            """
            SELECT id, seq, sender_id, created_at FROM messages
             WHERE conversation_id = @conversationId AND seq < @beforeSeq AND deleted_at IS NULL
             ORDER BY seq DESC LIMIT @limit
            """,
            new { conversationId, beforeSeq, limit });
        return rows.Reverse().ToList();
    }

    public async Task<MessageDto> GetAsync(Guid userId, Guid conversationId, Guid messageId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.RequireMemberAsync(conversationId, userId);
        var rows = await connection.QueryAsync<MessageRow>(
            MessageRow.Select + " WHERE m.id = @messageId AND m.conversation_id = @conversationId", new { messageId, conversationId });
        return (await renderer.RenderAsync(connection, rows.AsList())).SingleOrDefault() ?? throw ApiException.MessageNotFound();
    }

    public async Task<MessageDto> EditAsync(
        Guid userId, Guid conversationId, Guid messageId, EditMessageRequest request, CancellationToken cancellationToken, EventOrigin origin = default)
    {
        var content = ValidContent(request.Content);
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin);
        await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        var row = await LoadRowAsync(write, conversationId, messageId);
        if (row.SenderId != userId)
        {
            throw ApiException.Forbidden("not_sender", "Only the sender can edit a message.");
        }
        if (row.DeletedAt is not null)
        {
            throw ApiException.Conflict("message_deleted", "A deleted message cannot be edited.");
        }
        if (row.Kind != MessageKinds.Text)
        {
            throw ApiException.BadRequest("not_editable", "Only text messages can be edited.");
        }

        var now = time.UtcNowMicros();
        await write.ExecuteAsync(
            "UPDATE messages SET content = @content, edited_at = @now WHERE id = @messageId",
            new { content = cipher.EncryptText(content, messageId), now, messageId });
        var seq = await write.NextSequenceAsync(conversationId, now);
        var dto = (await renderer.LoadAsync(write.Connection, [messageId], write.Transaction))[0];
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MessageEdited, userId, now, new MessageReference(messageId), dto, messageId);
        await write.CommitAsync(cancellationToken);
        return dto;
    }

    /// <summary>Leaves a tombstone: content, reactions and any media (with its key) are erased from storage.</summary>
    public async Task DeleteAsync(Guid userId, Guid conversationId, Guid messageId, CancellationToken cancellationToken, EventOrigin origin = default)
    {
        string? storageKey;
        await using (var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin))
        {
            var role = await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
            var row = await LoadRowAsync(write, conversationId, messageId);
            if (row.SenderId != userId && !role.CanManage())
            {
                throw ApiException.Forbidden("not_allowed", "Only the sender, the owner or an admin can delete a message.");
            }
            if (row.DeletedAt is not null)
            {
                return;
            }
            var now = time.UtcNowMicros();
            await write.ExecuteAsync(
                "UPDATE messages SET content = NULL, media_id = NULL, deleted_at = @now WHERE id = @messageId",
                new { now, messageId });
            await write.ExecuteAsync("DELETE FROM message_reactions WHERE message_id = @messageId", new { messageId });
            if (row.MediaId is { } mediaId)
            {
                await write.ExecuteAsync("DELETE FROM media WHERE id = @mediaId", new { mediaId });
            }
            var seq = await write.NextSequenceAsync(conversationId, now);
            await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MessageDeleted, userId, now, new MessageDeleted(messageId, userId), messageId: messageId);
            await write.CommitAsync(cancellationToken);
            storageKey = row.MediaStorageKey;
        }

        if (storageKey is not null)
        {
            try
            {
                await mediaStore.DeleteAsync(storageKey, CancellationToken.None);
            }
            catch (Exception ex)
            {
                // The row and its wrapped key are gone, so the remaining ciphertext is unreadable; only space is lost.
                logger.LogWarning(ex, "Could not delete media object {StorageKey} of deleted message {MessageId}", storageKey, messageId);
            }
        }
    }

    public Task AddReactionAsync(Guid userId, Guid conversationId, Guid messageId, string reaction, CancellationToken cancellationToken, EventOrigin origin = default) =>
        ChangeReactionAsync(userId, conversationId, messageId, reaction, add: true, origin, cancellationToken);

    public Task RemoveReactionAsync(Guid userId, Guid conversationId, Guid messageId, string reaction, CancellationToken cancellationToken, EventOrigin origin = default) =>
        ChangeReactionAsync(userId, conversationId, messageId, reaction, add: false, origin, cancellationToken);

    private async Task ChangeReactionAsync(
        Guid userId, Guid conversationId, Guid messageId, string reaction, bool add, EventOrigin origin, CancellationToken cancellationToken)
    {
        // Only additions are refused up front: a reaction these rules refuse may have been stored by a version with
        // looser ones (before this one, or beside it during a rolling update), and its owner, or the Matrix redaction of
        // it, must still be able to remove it.
        var acceptable = ReactionText.IsAcceptable(reaction, MaxReactionLength);
        if (!acceptable && add)
        {
            throw InvalidReaction();
        }
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin);
        await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        var row = await LoadRowAsync(write, conversationId, messageId);
        if (row.DeletedAt is not null)
        {
            throw ApiException.Conflict("message_deleted", "A deleted message takes no reactions.");
        }
        var now = time.UtcNowMicros();
        var changed = add
            ? await write.ExecuteAsync(
                """
                INSERT INTO message_reactions (message_id, user_id, reaction, created_at) VALUES (@messageId, @userId, @reaction, @now)
                ON CONFLICT (message_id, user_id, reaction) DO NOTHING
                """,
                new { messageId, userId, reaction, now })
            : await write.ExecuteAsync(
                "DELETE FROM message_reactions WHERE message_id = @messageId AND user_id = @userId AND reaction = @reaction",
                new { messageId, userId, reaction });
        if (changed == 0)
        {
            if (!acceptable)
            {
                throw InvalidReaction();
            }
            return;
        }
        var seq = await write.NextSequenceAsync(conversationId, now);
        await write.AppendEventAsync(
            conversationId, seq, add ? ChatEventTypes.ReactionAdded : ChatEventTypes.ReactionRemoved, userId, now,
            new ReactionChanged(messageId, userId, reaction), messageId: messageId);
        await write.CommitAsync(cancellationToken);
    }

    private static ApiException InvalidReaction() => ApiException.BadRequest("invalid_reaction",
        $"A reaction is 1 to {MaxReactionLength} UTF-16 units of visible text or emoji; bidi controls, invisible or blank characters, " +
        $"joiners, variation selectors, tags or combining marks with nothing to attach to (or more than {ReactionText.MaxMarksPerBase} marks " +
        "on one character), noncharacters and private use characters are refused.");

    /// <summary>Moves the caller's read marker forward (never back) to <paramref name="request"/>'s seq.</summary>
    public async Task<long> MarkReadAsync(
        Guid userId, Guid conversationId, MarkReadRequest request, CancellationToken cancellationToken, EventOrigin origin = default)
    {
        if (request.Seq is not { } seq || seq < 0)
        {
            throw ApiException.BadRequest("invalid_seq", "seq must be a sequence number of this conversation.");
        }
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin);
        await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        var lastSeq = await write.QuerySingleOrDefaultAsync<long>("SELECT last_seq FROM conversations WHERE id = @conversationId", new { conversationId });
        if (seq > lastSeq)
        {
            throw ApiException.BadRequest("invalid_seq", $"seq is past the conversation's latest ({lastSeq}).");
        }
        var moved = await write.ExecuteAsync(
            """
            UPDATE conversation_members SET last_read_seq = @seq
             WHERE conversation_id = @conversationId AND user_id = @userId AND last_read_seq < @seq
            """,
            new { conversationId, userId, seq });
        if (moved == 0)
        {
            return await write.QuerySingleOrDefaultAsync<long>(
                "SELECT last_read_seq FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @userId",
                new { conversationId, userId });
        }
        var now = time.UtcNowMicros();
        var eventSeq = await write.NextSequenceAsync(conversationId, now);
        await write.AppendEventAsync(conversationId, eventSeq, ChatEventTypes.ReadUpdated, userId, now, new ReadUpdated(userId, seq));
        await write.CommitAsync(cancellationToken);
        return seq;
    }

    private static async Task<MessageRow> LoadRowAsync(ChatTransaction write, Guid conversationId, Guid messageId) =>
        await write.QuerySingleOrDefaultAsync<MessageRow>(
            MessageRow.Select + " WHERE m.id = @messageId AND m.conversation_id = @conversationId",
            new { messageId, conversationId }) ?? throw ApiException.MessageNotFound();

    private string ValidContent(string? content)
    {
        if (string.IsNullOrWhiteSpace(content))
        {
            throw ApiException.BadRequest("content_required", "content must not be empty.");
        }
        int bytes;
        try
        {
            bytes = StrictUtf8.GetByteCount(content);
        }
        catch (EncoderFallbackException)
        {
            throw ApiException.BadRequest("invalid_content", "content is not valid Unicode text (unpaired surrogate).");
        }
        if (bytes > options.Value.MaxContentBytes)
        {
            throw ApiException.BadRequest("content_too_long", $"content is longer than {options.Value.MaxContentBytes} bytes.");
        }
        return content;
    }
}
