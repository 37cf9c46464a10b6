using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>What the homeserver delivered at once: one appservice transaction or one /sync response.</summary>
public sealed class InboundBatch(int maxDeferrals, string? replayOf = null)
{
    private int _deferralsLeft = maxDeferrals;

    /// <summary>Takes one of the relations to unknown events this batch may park for later (bounds what one push can
    /// store); false when none is left. A push's rooms are applied in parallel.</summary>
    public bool TryTakeDeferral() => Interlocked.Decrement(ref _deferralsLeft) >= 0;

    /// <summary>
    /// For a deferred event applied again, what it waited for. It may wait again for something else (an event of a room
    /// whose mapping it waited for, then for its relation's target), never for the same thing twice.
    /// </summary>
    public string? ReplayOf { get; } = replayOf;

    public static InboundBatch Replay(string waitedFor) => new(0, waitedFor);
}

/// <summary>
/// Turns what Matrix users do in a mirrored room into the same chat changes an app user would make (stored,
/// sequenced, pushed to WebSockets), whether the events came in an appservice transaction or a /sync batch.
/// <list type="bullet">
/// <item>Per room, one event at a time in the order delivered: a retried or concurrent delivery waits its turn.</item>
/// <item>Once per event: <see cref="MatrixEvents"/> records each applied event id in the change's transaction.</item>
/// <item>Each event alone: one that cannot be understood is logged, counted (<c>bad_event</c>) and skipped; only a
/// transient failure (database, homeserver media) fails the delivery, so that the homeserver sends it again.</item>
/// </list>
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
    MatrixEvents matrixEvents,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<MatrixInbound> logger)
{
    private readonly KeyedGates<string> _roomGates = new(StringComparer.Ordinal);

    public InboundBatch NewBatch() => new(options.Value.MaxDeferredPerBatch);

    /// <summary>Applies a delivery: timeline events in order (each room's strictly one at a time), then typing and receipts.</summary>
    /// <exception cref="Exception">Only transient failures escape: the delivery must be retried as a whole.</exception>
    public async Task HandleBatchAsync(IEnumerable<JsonObject> events, IEnumerable<JsonObject> ephemeral, CancellationToken cancellationToken)
    {
        var batch = NewBatch();
        foreach (var evt in events)
        {
            await HandleAsync(evt, batch, cancellationToken);
        }
        foreach (var evt in ephemeral)
        {
            await HandleEphemeralAsync(evt, cancellationToken);
        }
    }

    /// <returns>Whether the event changed the chat now (not before, not refused, not waiting for something).</returns>
    public async Task<bool> HandleAsync(JsonObject evt, InboundBatch batch, CancellationToken cancellationToken)
    {
        var (type, roomId, sender, eventId) = (Json.String(evt["type"]), Json.String(evt["room_id"]), Json.String(evt["sender"]), Json.String(evt["event_id"]));
        if (type is null || roomId is null || sender is null || eventId is null)
        {
            BadEvent(eventId, roomId, "it lacks a string type, room_id, sender or event_id", null);
            return false;
        }
        if (ids.IsEcho(sender))
        {
            return false;
        }
        using (await _roomGates.EnterAsync(roomId, cancellationToken))
        {
            return await ApplyAsync(evt, new EventContext(type, roomId, sender, eventId), batch, cancellationToken);
        }
    }

    private sealed record EventContext(string Type, string RoomId, string Sender, string EventId)
    {
        public EventOrigin Origin => EventOrigin.Bridged(EventId);
    }

    private async Task<bool> ApplyAsync(JsonObject evt, EventContext e, InboundBatch batch, CancellationToken cancellationToken)
    {
        try
        {
            Guid? conversation;
            await using (var connection = await database.OpenAsync(cancellationToken))
            {
                if (await MatrixEvents.AppliedAsync(connection, e.EventId))
                {
                    MatrixMetrics.InboundEvents.WithLabels("repeated").Inc();
                    return false;
                }
                conversation = await MatrixActionSender.ConversationOfRoomAsync(connection, e.RoomId);
            }
            if (conversation is not { } conversationId)
            {
                // A room we are creating right now exists on the homeserver a moment before its mapping is saved.
                if (await RoomCreationPendingAsync(cancellationToken))
                {
                    await DeferAsync(e, RoomKey(e.RoomId), evt, batch, cancellationToken);
                    return false;
                }
                logger.LogDebug("Ignoring {Type} {EventId} in unmapped room {RoomId}", e.Type, e.EventId, e.RoomId);
                return false;
            }
            var content = evt["content"] as JsonObject ?? throw new MalformedEventException("its content is not an object");
            if (content.Count == 0 && e.Type is "m.room.message" or "m.reaction")
            {
                // Redacted: a room's timeline read back shows a message or reaction removed since as an empty shell.
                return false;
            }
            switch (e.Type)
            {
                case "m.room.message":
                    await MessageAsync(conversationId, e, content, cancellationToken);
                    break;
                case "m.reaction":
                    await ReactionAsync(conversationId, e, content, cancellationToken);
                    break;
                case "m.room.redaction":
                    await RedactionAsync(conversationId, e,
                        Json.String(evt["redacts"]) ?? Json.String(content["redacts"]) ?? throw new MalformedEventException("redacts is not an event id"),
                        cancellationToken);
                    break;
                case "m.room.member":
                    await MembershipAsync(conversationId, e, Json.String(evt["state_key"]) ?? throw new MalformedEventException("its state_key is not a user id"),
                        content, cancellationToken);
                    break;
                case "m.room.name":
                    // An empty name (or none) takes the room's name away; the conversation keeps its own.
                    if (content["name"] is not null && RequiredString(content, "name") is { Length: > 0 } name)
                    {
                        await conversations.RenameAsync(await users.AppUserIdAsync(e.Sender, null, cancellationToken), conversationId, new UpdateConversationRequest(name), cancellationToken, e.Origin);
                    }
                    break;
            }
            MatrixMetrics.InboundEvents.WithLabels("applied").Inc();
            return true;
        }
        catch (TargetNotYetKnownException waiting)
        {
            await DeferAsync(e, waiting.TargetEventId, evt, batch, cancellationToken);
        }
        catch (MalformedEventException malformed)
        {
            BadEvent(e.EventId, e.RoomId, malformed.Message, null);
        }
        catch (ApiException ex)
        {
            // The app's rules refuse it (an edit by someone other than the sender, a reaction to a deleted message…).
            MatrixMetrics.InboundEvents.WithLabels("refused").Inc();
            logger.LogInformation("Matrix {Type} {EventId} from {Sender} in {RoomId} not applied: {Code} {Detail}", e.Type, e.EventId, e.Sender, e.RoomId, ex.Code, ex.Message);
        }
        catch (Exception ex) when (MatrixEvents.IsAlreadyApplied(ex))
        {
            MatrixMetrics.InboundEvents.WithLabels("repeated").Inc();
        }
        catch (Exception ex) when (ex is not OperationCanceledException && MatrixFailures.Classify(ex) != FailureClass.Transient)
        {
            BadEvent(e.EventId, e.RoomId, ex.Message, ex);
        }
        return false;
    }

    private void BadEvent(string? eventId, string? roomId, string reason, Exception? exception)
    {
        MatrixMetrics.Errors.WithLabels("bad_event").Inc();
        MatrixMetrics.InboundEvents.WithLabels("bad_event").Inc();
        // Our own failures need their stack; a malformed event only needs to be named.
        logger.Log(exception is null or ArgumentException or FormatException or InvalidOperationException ? LogLevel.Warning : LogLevel.Error,
            exception is InvalidOperationException ? null : exception,
            "Skipped Matrix event {EventId} in {RoomId}: {Reason}", eventId, roomId, reason);
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

    private async Task DeferAsync(EventContext e, string targetEventId, JsonObject evt, InboundBatch batch, CancellationToken cancellationToken)
    {
        if (batch.ReplayOf == targetEventId)
        {
            logger.LogDebug("Matrix event {EventId} still waits for {TargetEventId}; dropped", e.EventId, targetEventId);
            return;
        }
        // A replayed event is parked already: its row now names the next thing it waits for. The worker deletes a row
        // only while it still names what the event waited for, so that row stays.
        var parked = batch.ReplayOf is not null;
        if (!parked)
        {
            if (!batch.TryTakeDeferral())
            {
                MatrixMetrics.Errors.WithLabels("deferred_overflow").Inc();
                logger.LogWarning("Matrix event {EventId} in {RoomId} relates to {TargetEventId}, which is unknown; dropped (this delivery parked its limit of relations already)",
                    e.EventId, e.RoomId, targetEventId);
                return;
            }
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            parked
                ? "UPDATE matrix_deferred_events SET target_event_id = @targetEventId WHERE event_id = @EventId"
                : """
                  INSERT INTO matrix_deferred_events (event_id, target_event_id, payload, received_at) VALUES (@EventId, @targetEventId, @payload, @now)
                  ON CONFLICT (event_id) DO NOTHING
                  """,
            new { e.EventId, targetEventId, payload = evt.ToJsonString(), now = time.UtcNowMicros() });
        logger.LogDebug("Matrix event {EventId} waits for {TargetEventId}", e.EventId, targetEventId);

        // The target may have been recorded (and its signal consumed) between our lookup and this write.
        if (await MatrixEvents.IsKnownTargetAsync(connection, targetEventId))
        {
            recorded.Recorded(targetEventId);
        }
    }

    /// <summary>Typing notices and read receipts, when the homeserver sends ephemeral events. Each is applied alone.</summary>
    private async Task HandleEphemeralAsync(JsonObject evt, CancellationToken cancellationToken)
    {
        try
        {
            await ApplyEphemeralAsync(evt, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException && MatrixFailures.Classify(ex) != FailureClass.Transient)
        {
            BadEvent(null, Json.String(evt["room_id"]), $"{Json.String(evt["type"])}: {ex.Message}", ex);
        }
    }

    private async Task ApplyEphemeralAsync(JsonObject evt, CancellationToken cancellationToken)
    {
        if (Json.String(evt["room_id"]) is not { } roomId || evt["content"] is not JsonObject content)
        {
            return;
        }
        Guid conversationId;
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            if (await MatrixActionSender.ConversationOfRoomAsync(connection, roomId) is not { } mapped)
            {
                return;
            }
            conversationId = mapped;
        }
        switch (Json.String(evt["type"]))
        {
            case "m.typing" when content["user_ids"] is JsonArray typing:
                foreach (var user in typing.Select(Json.String).OfType<string>().Where(u => !ids.IsEcho(u)))
                {
                    // Only members' typing is shown; anyone else in the room is not part of the conversation.
                    if (await MemberIdAsync(conversationId, user, cancellationToken) is { } member)
                    {
                        hub.Typing(member, conversationId, EventOrigin.Bridged());
                    }
                }
                break;
            case "m.receipt":
                foreach (var (eventId, byType) in content)
                {
                    if ((byType as JsonObject)?["m.read"] is not JsonObject readers || await MessageByEventAsync(conversationId, eventId, cancellationToken) is not { } message)
                    {
                        continue;
                    }
                    foreach (var (reader, _) in readers.Where(r => !ids.IsEcho(r.Key)))
                    {
                        if (await MemberIdAsync(conversationId, reader, cancellationToken) is not { } member)
                        {
                            continue;
                        }
                        try
                        {
                            await messages.MarkReadAsync(member, conversationId, new MarkReadRequest(message.Seq), cancellationToken, EventOrigin.Bridged());
                        }
                        catch (ApiException)
                        {
                            // Left between the check and the write: nothing to mark.
                        }
                    }
                }
                break;
        }
    }

    /// <summary>The member behind a Matrix user, or null when they are not a member (nothing is stored for them).</summary>
    private async Task<Guid?> MemberIdAsync(Guid conversationId, string matrixUserId, CancellationToken cancellationToken)
    {
        var userId = users.KnownUserId(matrixUserId);
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<int>(
            "SELECT 1 FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @userId", new { conversationId, userId }) == 1
            ? userId
            : null;
    }

    private async Task MessageAsync(Guid conversationId, EventContext e, JsonObject content, CancellationToken cancellationToken)
    {
        var relation = content["m.relates_to"] as JsonObject;
        if (Json.String(relation?["rel_type"]) == "m.replace")
        {
            await EditAsync(conversationId, e, RequiredString(relation!, "event_id"), content, cancellationToken);
            return;
        }

        var msgtype = Json.String(content["msgtype"]);
        var body = RequiredString(content, "body");
        var parentEventId = Json.String((relation?["m.in_reply_to"] as JsonObject)?["event_id"]);
        if (parentEventId is not null)
        {
            body = ReplyFallback.Strip(body);
        }
        var text = msgtype switch
        {
            "m.emote" => $"* {body}",
            // Formatted (HTML) bodies are not kept: the plain body every Matrix client sends is the message.
            _ => body,
        };
        Guid? replyTo = parentEventId is not null ? (await MessageByEventAsync(conversationId, parentEventId, cancellationToken))?.MessageId : null;

        var userId = await MemberAsync(conversationId, e.Sender, cancellationToken);
        if (msgtype is "m.audio" or "m.image" or "m.file" or "m.video" && Json.String(content["url"]) is { } mxc)
        {
            try
            {
                await ImportMediaAsync(conversationId, userId, e, content, mxc, replyTo, cancellationToken);
                recorded.Recorded(e.EventId);
                return;
            }
            catch (Exception ex) when (ex is ApiException or MatrixApiException && MatrixFailures.Classify(ex) == FailureClass.Permanent)
            {
                // Too large, a type we do not take, or gone from the homeserver: keep the message, say what it was.
                logger.LogWarning("Media of {EventId} not imported ({Error}); storing its description instead", e.EventId, ex.Message);
                text = $"[{msgtype[2..]}] {body}";
            }
        }
        if (string.IsNullOrWhiteSpace(text))
        {
            throw ApiException.BadRequest("content_required", "The Matrix message has no text.");
        }
        await messages.SendAsync(userId, conversationId, new NewMessage(MessageKinds.Text, text, null, replyTo, Origin: e.Origin));
        recorded.Recorded(e.EventId);
    }

    private async Task ImportMediaAsync(
        Guid conversationId, Guid userId, EventContext e, JsonObject content, string mxc, Guid? replyTo, CancellationToken cancellationToken)
    {
        var info = content["info"] as JsonObject;
        var fileName = Json.String(content["filename"]) ?? Json.String(content["body"]);
        using var response = await api.DownloadAsync(mxc, cancellationToken);
        var contentType = Json.String(info?["mimetype"]) ?? response.Content.Headers.ContentType?.ToString();
        int? duration = info?["duration"] is JsonValue value && value.TryGetValue<long>(out var ms) && ms is >= 0 and <= int.MaxValue ? (int)ms : null;
        // A caption is a body that differs from the file name (newer clients); otherwise the name is the content.
        var caption = Json.String(content["filename"]) is not null && Json.String(content["body"]) != Json.String(content["filename"]) ? Json.String(content["body"]) : null;
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
        await mediaFiles.ImportFromMatrixAsync(userId, conversationId, stream, contentType, Path.GetFileName(fileName), duration, caption, replyTo, e.Origin, cancellationToken);
    }

    private async Task EditAsync(Guid conversationId, EventContext e, string originalEventId, JsonObject content, CancellationToken cancellationToken)
    {
        // The replacement is m.new_content (spec 11.37.1); the body beside it is a fallback for clients without edits.
        var newContent = content["m.new_content"] as JsonObject ?? throw new MalformedEventException("the edit's m.new_content is not an object");
        var newBody = RequiredString(newContent, "body");
        var original = await MessageByEventAsync(conversationId, originalEventId, cancellationToken)
            ?? throw new TargetNotYetKnownException(originalEventId);
        var editor = await users.AppUserIdAsync(e.Sender, null, cancellationToken);
        try
        {
            await messages.EditAsync(editor, conversationId, original.MessageId, new EditMessageRequest(newBody), cancellationToken, e.Origin);
        }
        catch (ApiException ex) when (ex.Code == "not_sender")
        {
            // The homeserver does not check this (see the golden recordings); the chat does.
            logger.LogWarning("Ignoring edit of {EventId} by {Sender}, who did not send it", originalEventId, e.Sender);
        }
    }

    private async Task ReactionAsync(Guid conversationId, EventContext e, JsonObject content, CancellationToken cancellationToken)
    {
        var relation = content["m.relates_to"] as JsonObject;
        if (Json.String(relation?["rel_type"]) != "m.annotation")
        {
            throw new MalformedEventException("the reaction's m.relates_to is not an m.annotation");
        }
        var (key, target) = (RequiredString(relation!, "key"), RequiredString(relation!, "event_id"));
        var message = await MessageByEventAsync(conversationId, target, cancellationToken) ?? throw new TargetNotYetKnownException(target);
        var userId = await MemberAsync(conversationId, e.Sender, cancellationToken);
        await messages.AddReactionAsync(userId, conversationId, message.MessageId, key, cancellationToken, e.Origin);
    }

    private async Task RedactionAsync(Guid conversationId, EventContext e, string redacts, CancellationToken cancellationToken)
    {
        var redactor = await users.AppUserIdAsync(e.Sender, null, cancellationToken);
        if (await MessageByEventAsync(conversationId, redacts, cancellationToken) is { } message)
        {
            await messages.DeleteAsync(redactor, conversationId, message.MessageId, cancellationToken, e.Origin);
            return;
        }
        var reaction = await matrixEvents.ReactionAsync(conversationId, redacts, cancellationToken) ?? throw new TargetNotYetKnownException(redacts);
        if (reaction.UserId == redactor)
        {
            await messages.RemoveReactionAsync(redactor, conversationId, reaction.MessageId, reaction.Reaction, cancellationToken, e.Origin);
        }
    }

    private async Task MembershipAsync(Guid conversationId, EventContext e, string target, JsonObject content, CancellationToken cancellationToken)
    {
        var membership = RequiredString(content, "membership");
        if (ids.IsEcho(target))
        {
            return;
        }
        var displayName = Json.String(content["displayname"]);
        switch (membership)
        {
            case "join":
                var userId = await users.AppUserIdAsync(target, displayName, cancellationToken);
                try
                {
                    await conversations.JoinFromBridgeAsync(conversationId, userId, ExternalId(target, userId), displayName, e.Origin, cancellationToken);
                }
                catch (ApiException ex) when (ex.Code == "direct_conversation")
                {
                    await RemoveFromDirectRoomAsync(conversationId, e.RoomId, target, cancellationToken);
                    throw;
                }
                break;
            case "leave" or "ban":
                var leaving = await users.AppUserIdAsync(target, displayName, cancellationToken);
                Guid? removedBy = e.Sender == target ? null : await users.AppUserIdAsync(e.Sender, null, cancellationToken);
                await conversations.LeaveFromBridgeAsync(conversationId, leaving, removedBy, e.Origin, cancellationToken);
                break;
        }
    }

    /// <summary>A direct conversation stays between its two people: whoever else joins its room is shown out.</summary>
    private async Task RemoveFromDirectRoomAsync(Guid conversationId, string roomId, string matrixUserId, CancellationToken cancellationToken)
    {
        try
        {
            await api.KickAsync(roomId, matrixUserId, "This room mirrors a direct conversation between two people.", cancellationToken);
            logger.LogInformation("Removed {MatrixUserId} from {RoomId}, the room of direct conversation {ConversationId}", matrixUserId, roomId, conversationId);
        }
        catch (MatrixApiException ex)
        {
            // They stay in the room, but nothing they do reaches the conversation.
            logger.LogWarning("Could not remove {MatrixUserId} from direct room {RoomId}: {Error}", matrixUserId, roomId, ex.Message);
        }
    }

    /// <summary>The app user for a sender, made a member first if the room let them speak before we saw them join.</summary>
    private async Task<Guid> MemberAsync(Guid conversationId, string sender, CancellationToken cancellationToken)
    {
        var userId = await users.AppUserIdAsync(sender, null, cancellationToken);
        await conversations.JoinFromBridgeAsync(conversationId, userId, ExternalId(sender, userId), null, EventOrigin.Bridged(), cancellationToken);
        return userId;
    }

    /// <summary>The Matrix id to show for a member who is not an app user (null for app users).</summary>
    private static string? ExternalId(string matrixUserId, Guid userId) =>
        userId == MatrixUsers.ExternalUserId(matrixUserId) ? matrixUserId : null;

    /// <summary>A field the event cannot be applied without; absent or of another type, the event is malformed.</summary>
    private static string RequiredString(JsonObject json, string field) =>
        Json.String(json[field]) ?? throw new MalformedEventException($"{field} is not a string");

    private Task<MessageEvent?> MessageByEventAsync(Guid conversationId, string eventId, CancellationToken cancellationToken) =>
        matrixEvents.MessageAsync(conversationId, eventId, cancellationToken);

    private sealed class TargetNotYetKnownException(string targetEventId) : Exception($"Target {targetEventId} is not known yet.")
    {
        public string TargetEventId { get; } = targetEventId;
    }
}

/// <summary>An event with a field the bridge needs missing or of the wrong type: skipped and counted, never retried.</summary>
internal sealed class MalformedEventException(string reason) : Exception(reason);

/// <summary>
/// Reading event JSON from anyone (federation brings any shape): a value of the wrong type is absent, and U+0000 is
/// dropped from text, as PostgreSQL text cannot hold it (the write would fail on every retry) and it shows as nothing.
/// </summary>
public static class Json
{
    public static string? String(JsonNode? node) => node is JsonValue value && value.TryGetValue<string>(out var text)
        ? text.Contains('\0') ? text.Replace("\0", "", StringComparison.Ordinal) : text
        : null;
}

/// <summary>Rich reply fallbacks (spec 11.19.2.1): quoted lines ahead of the reply in <c>body</c>, which we neither keep nor show.</summary>
public static class ReplyFallback
{
    public static string Strip(string body)
    {
        var lines = body.Split('\n');
        var quoted = 0;
        while (quoted < lines.Length && lines[quoted].StartsWith('>'))
        {
            quoted++;
        }
        if (quoted == 0)
        {
            return body;
        }
        if (quoted < lines.Length && lines[quoted].Length == 0)
        {
            quoted++;
        }
        return string.Join('\n', lines[quoted..]);
    }
}
