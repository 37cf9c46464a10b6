using System.Text.Json.Nodes;
using Dapper;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Turns what Matrix users do in a mirrored room into the same chat changes an app user would make (stored,
/// sequenced, pushed to WebSockets), whether the events came in an appservice transaction or a /sync batch.
/// Applying an event twice changes nothing, so a redelivered transaction or batch is harmless.
/// </summary>
public sealed class MatrixInbound(
    ChatDatabase database,
    MatrixIds ids,
    MatrixUsers users,
    MessageService messages,
    ConversationService conversations,
    Media.MediaService mediaFiles,
    MatrixApi api,
    RealtimeHub hub,
    RecordedEventIds recorded,
    TimeProvider time,
    ILogger<MatrixInbound> logger)
{
    /// <param name="deferrable">Whether a relation to an event we do not know yet may wait for it (false when replaying one that waited).</param>
    public async Task HandleAsync(JsonObject evt, CancellationToken cancellationToken, bool deferrable = true)
    {
        MatrixMetrics.SyncEvents.Inc();
        var type = (string?)evt["type"];
        var roomId = (string?)evt["room_id"];
        var sender = (string?)evt["sender"];
        var eventId = (string?)evt["event_id"];
        if (type is null || roomId is null || sender is null || eventId is null || ids.IsEcho(sender))
        {
            return;
        }
        if (await ConversationOfRoomAsync(roomId, cancellationToken) is not { } conversationId)
        {
            // A room we are creating right now exists on the homeserver a moment before its mapping is saved.
            if (deferrable && await RoomCreationPendingAsync(cancellationToken))
            {
                await DeferAsync(eventId, RoomKey(roomId), evt, cancellationToken);
                return;
            }
            logger.LogInformation("Ignoring {Type} {EventId} in unmapped room {RoomId}", type, eventId, roomId);
            return;
        }
        var content = evt["content"] as JsonObject ?? [];
        try
        {
            switch (type)
            {
                case "m.room.message":
                    await MessageAsync(conversationId, sender, eventId, content, cancellationToken);
                    break;
                case "m.reaction":
                    await ReactionAsync(conversationId, sender, eventId, content, cancellationToken);
                    break;
                case "m.room.redaction":
                    await RedactionAsync(conversationId, sender, (string?)evt["redacts"] ?? (string?)content["redacts"], cancellationToken);
                    break;
                case "m.room.member":
                    await MembershipAsync(conversationId, sender, (string?)evt["state_key"], content, cancellationToken);
                    break;
                case "m.room.name" when (string?)content["name"] is { Length: > 0 } name:
                    await conversations.RenameAsync(await users.AppUserIdAsync(sender, null, cancellationToken), conversationId, new UpdateConversationRequest(name), cancellationToken, EventOrigin.Matrix);
                    break;
            }
        }
        catch (TargetNotYetKnownException waiting)
        {
            if (deferrable)
            {
                // Usually one of our own events whose id the dispatcher is recording at this very moment.
                await DeferAsync(eventId, waiting.TargetEventId, evt, cancellationToken);
            }
        }
        catch (ApiException ex)
        {
            // The app's rules refuse it (an edit by someone other than the sender, a reaction to a deleted message…).
            logger.LogInformation("Matrix {Type} {EventId} from {Sender} not applied: {Code} {Detail}", type, eventId, sender, ex.Code, ex.Message);
        }
    }

    /// <summary>What a deferred event waits for when it waits for its room's mapping rather than for an event.</summary>
    public static string RoomKey(string roomId) => $"room:{roomId}";

    private async Task<bool> RoomCreationPendingAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<int>(
            "SELECT 1 FROM matrix_outbox WHERE status = 'pending' AND action = @createRoom LIMIT 1",
            new { createRoom = MatrixActions.CreateRoom }) == 1;
    }

    private async Task DeferAsync(string eventId, string targetEventId, JsonObject evt, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            """
            INSERT INTO matrix_deferred_events (event_id, target_event_id, payload, received_at) VALUES (@eventId, @targetEventId, @payload, @now)
            ON CONFLICT (event_id) DO NOTHING
            """,
            new { eventId, targetEventId, payload = evt.ToJsonString(), now = time.UtcNowMicros() });
        logger.LogDebug("Matrix event {EventId} waits for {TargetEventId}", eventId, targetEventId);

        // The target may have been recorded (and its signal consumed) between our lookup and this insert.
        var known = await connection.QuerySingleOrDefaultAsync<int>(
            """
            SELECT 1 WHERE EXISTS (SELECT 1 FROM messages WHERE matrix_event_id = @targetEventId)
                        OR EXISTS (SELECT 1 FROM message_reactions WHERE matrix_event_id = @targetEventId)
                        OR EXISTS (SELECT 1 FROM matrix_room_mapping WHERE 'room:' || matrix_room_id = @targetEventId)
            """,
            new { targetEventId });
        if (known == 1)
        {
            recorded.Recorded(targetEventId);
        }
    }

    /// <summary>Typing notices and read receipts, when the homeserver sends ephemeral events.</summary>
    public async Task HandleEphemeralAsync(JsonObject evt, CancellationToken cancellationToken)
    {
        var roomId = (string?)evt["room_id"];
        if (roomId is null || await ConversationOfRoomAsync(roomId, cancellationToken) is not { } conversationId)
        {
            return;
        }
        switch ((string?)evt["type"])
        {
            case "m.typing" when evt["content"] is JsonObject typingContent && typingContent["user_ids"] is JsonArray typing:
                foreach (var user in typing.Select(u => (string?)u).OfType<string>().Where(u => !ids.IsEcho(u)))
                {
                    hub.Typing(await users.AppUserIdAsync(user, null, cancellationToken), conversationId);
                }
                break;
            case "m.receipt" when evt["content"] is JsonObject receipts:
                foreach (var (eventId, byType) in receipts)
                {
                    if (byType?["m.read"] is not JsonObject readers || await MessageByEventAsync(conversationId, eventId, cancellationToken) is not { } message)
                    {
                        continue;
                    }
                    foreach (var (reader, _) in readers.Where(r => !ids.IsEcho(r.Key)))
                    {
                        var userId = await users.AppUserIdAsync(reader, null, cancellationToken);
                        try
                        {
                            await messages.MarkReadAsync(userId, conversationId, new MarkReadRequest(message.Seq), cancellationToken, EventOrigin.Matrix);
                        }
                        catch (ApiException)
                        {
                            // A receipt from someone who is not (or no longer) a member: nothing to mark.
                        }
                    }
                }
                break;
        }
    }

    private async Task MessageAsync(Guid conversationId, string sender, string eventId, JsonObject content, CancellationToken cancellationToken)
    {
        var relation = content["m.relates_to"] as JsonObject;
        if ((string?)relation?["rel_type"] == "m.replace")
        {
            await EditAsync(conversationId, sender, (string?)relation!["event_id"], content, cancellationToken);
            return;
        }
        if (await MessageByEventAsync(conversationId, eventId, cancellationToken) is not null)
        {
            return;
        }

        var body = (string?)content["body"] ?? "";
        var text = (string?)content["msgtype"] switch
        {
            "m.emote" => $"* {body}",
            // Formatted (HTML) bodies are not kept: the plain body every Matrix client sends is the message.
            _ => body,
        };
        Guid? replyTo = (string?)relation?["m.in_reply_to"]?["event_id"] is { } parentEventId
            ? (await MessageByEventAsync(conversationId, parentEventId, cancellationToken))?.Id
            : null;

        var userId = await MemberAsync(conversationId, sender, cancellationToken);
        if ((string?)content["msgtype"] is "m.audio" or "m.image" or "m.file" or "m.video" && (string?)content["url"] is { } mxc)
        {
            try
            {
                await ImportMediaAsync(conversationId, userId, eventId, content, mxc, replyTo, cancellationToken);
                recorded.Recorded(eventId);
                return;
            }
            catch (Exception ex) when (ex is ApiException or MatrixApiException)
            {
                // Too large, a type we do not take, or gone from the homeserver: keep the message, say what it was.
                logger.LogWarning("Media of {EventId} not imported ({Error}); storing its description instead", eventId, ex.Message);
                text = $"[{((string?)content["msgtype"])![2..]}] {body}";
            }
        }
        await messages.SendAsync(userId, conversationId, new NewMessage(MessageKinds.Text, text, null, replyTo, MatrixEventId: eventId));
        recorded.Recorded(eventId);
    }

    private async Task ImportMediaAsync(
        Guid conversationId, Guid userId, string eventId, JsonObject content, string mxc, Guid? replyTo, CancellationToken cancellationToken)
    {
        var info = content["info"] as JsonObject;
        var fileName = (string?)content["filename"] ?? (string?)content["body"];
        using var response = await api.DownloadAsync(mxc, cancellationToken);
        var contentType = (string?)info?["mimetype"] ?? response.Content.Headers.ContentType?.ToString();
        int? duration = info?["duration"] is JsonValue value && value.TryGetValue<long>(out var ms) && ms is >= 0 and <= int.MaxValue ? (int)ms : null;
        // A caption is a body that differs from the file name (newer clients); otherwise the name is the content.
        var caption = (string?)content["filename"] is not null && (string?)content["body"] != (string?)content["filename"] ? (string?)content["body"] : null;
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        await mediaFiles.ImportFromMatrixAsync(userId, conversationId, stream, contentType, Path.GetFileName(fileName), duration, caption, replyTo, eventId, cancellationToken);
    }

    private async Task EditAsync(Guid conversationId, string sender, string? originalEventId, JsonObject content, CancellationToken cancellationToken)
    {
        if (originalEventId is null)
        {
            return;
        }
        var original = await MessageByEventAsync(conversationId, originalEventId, cancellationToken)
            ?? throw new TargetNotYetKnownException(originalEventId);
        var editor = await users.AppUserIdAsync(sender, null, cancellationToken);
        if (editor != original.SenderId)
        {
            // The homeserver does not check this (see the golden recordings); we must.
            logger.LogWarning("Ignoring edit of {EventId} by {Sender}, who did not send it", originalEventId, sender);
            return;
        }
        var newBody = (string?)content["m.new_content"]?["body"] ?? ((string?)content["body"])?.TrimStart('*', ' ');
        await messages.EditAsync(editor, conversationId, original.Id, new EditMessageRequest(newBody), cancellationToken, EventOrigin.Matrix);
    }

    private async Task ReactionAsync(Guid conversationId, string sender, string eventId, JsonObject content, CancellationToken cancellationToken)
    {
        var relation = content["m.relates_to"];
        if ((string?)relation?["rel_type"] != "m.annotation" || (string?)relation["key"] is not { } key || (string?)relation["event_id"] is not { } target)
        {
            return;
        }
        var message = await MessageByEventAsync(conversationId, target, cancellationToken) ?? throw new TargetNotYetKnownException(target);
        var userId = await MemberAsync(conversationId, sender, cancellationToken);
        await messages.AddReactionAsync(userId, conversationId, message.Id, key, cancellationToken, eventId);
    }

    private async Task RedactionAsync(Guid conversationId, string sender, string? redacts, CancellationToken cancellationToken)
    {
        if (redacts is null)
        {
            return;
        }
        var redactor = await users.AppUserIdAsync(sender, null, cancellationToken);
        if (await MessageByEventAsync(conversationId, redacts, cancellationToken) is { } message)
        {
            await messages.DeleteAsync(redactor, conversationId, message.Id, cancellationToken, EventOrigin.Matrix);
            return;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        var reaction = await connection.QuerySingleOrDefaultAsync<ReactionRef>(
            """
            SELECT r.message_id, r.user_id, r.reaction FROM message_reactions r JOIN messages m ON m.id = r.message_id
             WHERE r.matrix_event_id = @redacts AND m.conversation_id = @conversationId
            """,
            new { redacts, conversationId });
        if (reaction is null)
        {
            throw new TargetNotYetKnownException(redacts);
        }
        if (reaction.UserId == redactor)
        {
            await messages.RemoveReactionAsync(redactor, conversationId, reaction.MessageId, reaction.Reaction, cancellationToken, EventOrigin.Matrix);
        }
    }

    private async Task MembershipAsync(Guid conversationId, string sender, string? target, JsonObject content, CancellationToken cancellationToken)
    {
        if (target is null || ids.IsEcho(target))
        {
            return;
        }
        var displayName = (string?)content["displayname"];
        var userId = await users.AppUserIdAsync(target, displayName, cancellationToken);
        switch ((string?)content["membership"])
        {
            case "join":
                await conversations.JoinFromMatrixAsync(conversationId, userId, ExternalId(target, userId), displayName, cancellationToken);
                break;
            case "leave" or "ban":
                Guid? removedBy = sender == target ? null : await users.AppUserIdAsync(sender, null, cancellationToken);
                await conversations.LeaveFromMatrixAsync(conversationId, userId, removedBy, cancellationToken);
                break;
        }
    }

    /// <summary>The app user for a sender, made a member first if the room let them speak before we saw them join.</summary>
    private async Task<Guid> MemberAsync(Guid conversationId, string sender, CancellationToken cancellationToken)
    {
        var userId = await users.AppUserIdAsync(sender, null, cancellationToken);
        await conversations.JoinFromMatrixAsync(conversationId, userId, ExternalId(sender, userId), null, cancellationToken);
        return userId;
    }

    /// <summary>The Matrix id to show for a member who is not an app user (null for app users).</summary>
    private static string? ExternalId(string matrixUserId, Guid userId) =>
        userId == MatrixUsers.ExternalUserId(matrixUserId) ? matrixUserId : null;

    private async Task<Guid?> ConversationOfRoomAsync(string roomId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<Guid?>(
            "SELECT conversation_id FROM matrix_room_mapping WHERE matrix_room_id = @roomId", new { roomId });
    }

    private async Task<MessageRef?> MessageByEventAsync(Guid conversationId, string eventId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<MessageRef>(
            "SELECT id, sender_id, seq FROM messages WHERE matrix_event_id = @eventId AND conversation_id = @conversationId",
            new { eventId, conversationId });
    }

    private sealed class TargetNotYetKnownException(string targetEventId) : Exception($"Target {targetEventId} is not known yet.")
    {
        public string TargetEventId { get; } = targetEventId;
    }

    private sealed class MessageRef
    {
        public Guid Id { get; init; }
        public Guid SenderId { get; init; }
        public long Seq { get; init; }
    }

    private sealed class ReactionRef
    {
        public Guid MessageId { get; init; }
        public Guid UserId { get; init; }
        public string Reaction { get; init; } = "";
    }
}
