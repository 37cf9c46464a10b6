using System.Data.Common;
using System.Net;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>Performs one outbox action against the homeserver and records the Matrix ids it produced.</summary>
public sealed class MatrixActionSender(
    ChatDatabase database,
    MatrixApi api,
    MatrixIds ids,
    MessageRenderer renderer,
    Media.MediaReader mediaFiles,
    RecordedEventIds recorded,
    MatrixEvents events,
    Identity.UserProfiles profiles,
    MatrixUsers users,
    IOptions<MatrixOptions> options,
    TimeProvider time,
    ILogger<MatrixActionSender> logger) : IDisposable
{
    public const string ConversationIdField = "io.nova.conversation_id";
    public const string SenderField = "io.nova.sender";

    /// <summary>Carried by every event an action posts, so that the action can be recognised on the homeserver.</summary>
    public const string ActionField = "io.nova.txn_id";

    // Ghosts registered (or found) by this process, with the display name they were last given.
    private readonly RowCache<Guid, string> _ghosts = new(100_000, TimeSpan.FromHours(1), renewedOnUse: true);

    // A conversation's room never changes once created (a re-run of create_room finds the same room by its alias).
    private readonly RowCache<Guid, string> _rooms = new(100_000, TimeSpan.FromHours(1), renewedOnUse: true);

    private bool Appservice => options.Value.Mode == MatrixMode.Appservice;

    public void Dispose()
    {
        _ghosts.Dispose();
        _rooms.Dispose();
    }

    /// <summary>Reads the messages a batch of actions will send, edit or redact (and what they reply to), on the drain's connection.</summary>
    public async Task ReadAheadAsync(DbConnection connection, DispatchTurn turn, IReadOnlyList<OutboxAction> actions, CancellationToken cancellationToken)
    {
        var ids = actions
            .Where(a => a.Action is MatrixActions.SendMessage or MatrixActions.Edit or MatrixActions.Redact && a.MessageId is not null)
            .Select(a => a.MessageId!.Value)
            .Distinct()
            .ToArray();
        if (ids.Length == 0)
        {
            turn.ReadAhead([]);
            return;
        }
        var messages = await renderer.ReadStoredAsync(connection, ids, cancellationToken);
        // A reply's fallback quotes its parent.
        var parents = messages.Select(m => m.ReplyTo).OfType<Guid>().Except(ids).ToArray();
        if (parents.Length > 0)
        {
            messages.AddRange(await renderer.ReadStoredAsync(connection, parents, cancellationToken));
        }
        turn.ReadAhead(messages);
    }

    /// <returns>The Matrix event id the action produced, if any. Event ids to store on messages and reactions go into <paramref name="turn"/>.</returns>
    public async Task<string?> SendAsync(DispatchTurn turn, OutboxAction action, CancellationToken cancellationToken)
    {
        if (!OutboxPayloads.Reads(action.PayloadVersion))
        {
            throw new NotSupportedException($"Outbox payload version {action.PayloadVersion} is not one this version of the service reads.");
        }
        if (action.Action == MatrixActions.CreateRoom)
        {
            await CreateRoomAsync(Payload<CreateRoomPayload>(action), cancellationToken);
            return null;
        }

        var roomId = await RoomIdAsync(action.ConversationId, cancellationToken)
            ?? throw new ActionNotReadyException($"Conversation {action.ConversationId} has no Matrix room yet.");
        return action.Action switch
        {
            MatrixActions.Invite => await InviteAsync(roomId, Payload<InvitePayload>(action).Member.UserId, cancellationToken),
            MatrixActions.RemoveMember => await RemoveMemberAsync(roomId, Payload<RemoveMemberPayload>(action), cancellationToken),
            MatrixActions.Rename => await api.SetStateAsync(roomId, "m.room.name", "", new JsonObject { ["name"] = Payload<RenamePayload>(action).Name }, cancellationToken),
            MatrixActions.SendMessage => await SendMessageAsync(turn, roomId, action, cancellationToken),
            MatrixActions.Edit => await EditAsync(turn, roomId, action, cancellationToken),
            MatrixActions.Redact => await RedactMessageAsync(turn, roomId, action, Payload<RedactPayload>(action), cancellationToken),
            MatrixActions.React => await ReactAsync(turn, roomId, action, Payload<ReactionPayload>(action), cancellationToken),
            MatrixActions.Unreact => await UnreactAsync(roomId, action, Payload<ReactionPayload>(action), cancellationToken),
            MatrixActions.ReadReceipt => await ReadReceiptAsync(roomId, action.ConversationId, Payload<ReadReceiptPayload>(action), cancellationToken),
            _ => throw new NotSupportedException($"Unknown outbox action '{action.Action}'."),
        };
    }

    /// <summary>
    /// The events of these actions that are on the homeserver already (posted before a crash, a takeover, or an attempt
    /// that got no answer), by action id. Only our own senders count: nobody else can post as the bot or a ghost.
    /// </summary>
    public async Task<Dictionary<string, string>> FindPostedAsync(DispatchTurn turn, IReadOnlyList<OutboxAction> actions, CancellationToken cancellationToken)
    {
        if (await RoomIdAsync(actions[0].ConversationId, cancellationToken) is not { } roomId)
        {
            // Nothing is posted before the room's id is saved: there is nothing to find.
            return [];
        }
        var senders = new HashSet<string>(StringComparer.Ordinal) { Appservice ? ids.BotUserId : options.Value.UserId! };
        if (Appservice)
        {
            foreach (var action in actions)
            {
                if (action.ActorId is { } actor)
                {
                    senders.Add(ids.UserId(actor));
                }
                if (turn.Message(action.MessageId) is { } message)
                {
                    senders.Add(ids.UserId(message.SenderId));
                }
            }
        }
        var filter = new JsonObject
        {
            ["senders"] = new JsonArray([.. senders.Select(s => (JsonNode)s)]),
            ["types"] = new JsonArray("m.room.message", "m.reaction", "m.room.redaction"),
        };
        // Our unrecorded events are the newest of ours in the room: a page a little larger than the batch reaches them.
        var events = await api.RecentEventsAsync(roomId, filter, Math.Min(1000, actions.Count * 2 + 50), cancellationToken);
        var found = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var evt in events.OfType<JsonObject>())
        {
            if (Json.String(evt["sender"]) is { } sender && senders.Contains(sender)
                && Json.String((evt["content"] as JsonObject)?[ActionField]) is { } txnId && Json.String(evt["event_id"]) is { } eventId)
            {
                found.TryAdd(txnId, eventId);
            }
        }
        return found;
    }

    /// <summary>Takes an event found on the homeserver as what the action produced.</summary>
    public void Adopt(DispatchTurn turn, OutboxAction action, string eventId)
    {
        switch (action.Action)
        {
            case MatrixActions.SendMessage when action.MessageId is { } messageId:
                turn.MessageSent(action.ConversationId, messageId, action.Seq, eventId);
                break;
            case MatrixActions.React:
                turn.ReactionSent(action.ConversationId, Payload<ReactionPayload>(action), eventId);
                break;
        }
    }

    /// <summary>The app user's read marker, as a read receipt of their ghost on the latest message that reached the room.</summary>
    private async Task<string?> ReadReceiptAsync(string roomId, Guid conversationId, ReadReceiptPayload read, CancellationToken cancellationToken)
    {
        if (!Appservice)
        {
            // One service account cannot say what each person has read.
            return null;
        }
        if (await events.LatestEventAtOrBeforeAsync(conversationId, read.LastReadSeq, cancellationToken) is { } eventId)
        {
            await EnsureGhostAsync(read.UserId, cancellationToken);
            await api.ReceiptAsync(roomId, eventId, ids.UserId(read.UserId), cancellationToken);
        }
        return null;
    }

    private async Task CreateRoomAsync(CreateRoomPayload conversation, CancellationToken cancellationToken)
    {
        // The stored mapping, not the cache: a create_room that runs again must also save a mapping that went missing.
        if (await StoredRoomIdAsync(conversation.Id, cancellationToken) is { } existing)
        {
            await JoinMembersAsync(existing, conversation.Members.Select(m => m.UserId), cancellationToken);
            return;
        }
        foreach (var member in conversation.Members)
        {
            await EnsureGhostAsync(member.UserId, cancellationToken);
        }

        var request = new JsonObject
        {
            ["preset"] = "private_chat",
            ["room_alias_name"] = ids.RoomAliasLocalpart(conversation.Id),
            ["invite"] = new JsonArray([.. conversation.Members.Select(m => (JsonNode)ids.UserId(m.UserId))]),
            ["is_direct"] = conversation.Kind == ConversationKind.Direct,
            ["creation_content"] = new JsonObject { [ConversationIdField] = conversation.Id.ToString() },
        };
        if (conversation.Name is not null)
        {
            request["name"] = conversation.Name;
        }

        string roomId;
        try
        {
            roomId = await api.CreateRoomAsync(request, cancellationToken);
        }
        catch (MatrixApiException ex) when (ex.Errcode == "M_ROOM_IN_USE")
        {
            // We created it before crashing ahead of saving the mapping: the alias finds it.
            roomId = await api.ResolveAliasAsync(ids.RoomAlias(conversation.Id), cancellationToken)
                ?? throw new MatrixApiException(ex.Status, ex.Errcode, $"Alias {ids.RoomAlias(conversation.Id)} is taken but does not resolve.");
            logger.LogInformation("Room for conversation {ConversationId} already existed as {RoomId}; reusing it", conversation.Id, roomId);
        }

        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            var now = time.UtcNowMicros();
            await connection.ExecuteAsync(
                """
                INSERT INTO matrix_room_mapping (conversation_id, matrix_room_id, created_at, updated_at)
                VALUES (@conversationId, @roomId, @now, @now)
                ON CONFLICT (conversation_id) DO UPDATE SET matrix_room_id = @roomId, updated_at = @now
                """,
                new { conversationId = conversation.Id, roomId, now });
        }
        _rooms.Set(conversation.Id, roomId);
        recorded.Recorded(MatrixInbound.RoomKey(roomId));
        await JoinMembersAsync(roomId, conversation.Members.Select(m => m.UserId), cancellationToken);
    }

    private async Task JoinMembersAsync(string roomId, IEnumerable<Guid> members, CancellationToken cancellationToken)
    {
        if (!Appservice)
        {
            return;
        }
        foreach (var member in members)
        {
            await api.JoinAsync(roomId, ids.UserId(member), cancellationToken);
        }
    }

    private async Task<string?> InviteAsync(string roomId, Guid userId, CancellationToken cancellationToken)
    {
        await EnsureGhostAsync(userId, cancellationToken);
        try
        {
            await api.InviteAsync(roomId, ids.UserId(userId), cancellationToken);
        }
        catch (MatrixApiException ex) when (ex.Errcode == "M_FORBIDDEN" && ex.Message.Contains("already in the room", StringComparison.OrdinalIgnoreCase))
        {
            // A retry after the invite went through.
        }
        await JoinMembersAsync(roomId, [userId], cancellationToken);
        return null;
    }

    private async Task<string?> RemoveMemberAsync(string roomId, RemoveMemberPayload removed, CancellationToken cancellationToken)
    {
        var userId = ids.UserId(removed.UserId);
        if (removed.Left && Appservice)
        {
            await api.LeaveAsync(roomId, userId, cancellationToken);
        }
        else
        {
            await api.KickAsync(roomId, userId, removed.Left ? "Left the conversation" : "Removed from the conversation", cancellationToken);
        }
        return null;
    }

    private async Task<string?> SendMessageAsync(DispatchTurn turn, string roomId, OutboxAction action, CancellationToken cancellationToken)
    {
        var message = MessageOf(turn, action);
        if (message.DeletedAt is not null)
        {
            // Deleted before it reached Matrix: there is nothing left to mirror.
            return null;
        }
        await EnsureGhostAsync(message.SenderId, cancellationToken);
        var content = message.Media is { } media
            ? await MediaContentAsync(message, media, cancellationToken)
            : TextContent(message.SenderId, message.Content ?? "");
        if (message.ReplyTo is { } parent && await EventIdOfMessageAsync(turn, parent, cancellationToken) is { } parentEventId)
        {
            content["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = new JsonObject { ["event_id"] = parentEventId } };
            if (turn.Message(parent) is { } quoted)
            {
                await AddReplyFallbackAsync(content, roomId, parentEventId, quoted, cancellationToken);
            }
        }
        content[ActionField] = action.TxnId;
        // The message's own time, also for one posted long after (an outage, a backfill).
        var eventId = await api.SendEventAsync(roomId, "m.room.message", action.TxnId, content, As(message.SenderId), message.CreatedAt, cancellationToken);
        turn.MessageSent(message.ConversationId, message.Id, message.Seq, eventId);
        return eventId;
    }

    private async Task<string?> EditAsync(DispatchTurn turn, string roomId, OutboxAction action, CancellationToken cancellationToken)
    {
        var message = MessageOf(turn, action);
        if (message.DeletedAt is not null)
        {
            return null;
        }
        var original = await EventIdOfMessageAsync(turn, message.Id, cancellationToken)
            ?? throw new MatrixApiException(System.Net.HttpStatusCode.NotFound, "M_NOT_FOUND", $"Message {message.Id} never reached Matrix; its edit cannot either.");
        var newContent = TextContent(message.SenderId, message.Content ?? "");
        var content = TextContent(message.SenderId, "* " + (message.Content ?? ""));
        content["m.new_content"] = newContent;
        content["m.relates_to"] = new JsonObject { ["rel_type"] = "m.replace", ["event_id"] = original };
        content[ActionField] = action.TxnId;
        return await api.SendEventAsync(roomId, "m.room.message", action.TxnId, content, As(message.SenderId), action.CreatedAt, cancellationToken);
    }

    private async Task<string?> RedactMessageAsync(DispatchTurn turn, string roomId, OutboxAction action, RedactPayload deleted, CancellationToken cancellationToken)
    {
        if (await EventIdOfMessageAsync(turn, deleted.MessageId, cancellationToken) is not { } eventId)
        {
            return null;
        }
        // A ghost may redact its own events; moderators' deletions go through the bot, which has the power level.
        var redactor = turn.Message(deleted.MessageId)?.SenderId == deleted.DeletedBy ? As(deleted.DeletedBy) : null;
        return await api.RedactAsync(roomId, eventId, action.TxnId, RedactionContent(action, "Deleted in the app"), redactor, action.CreatedAt, cancellationToken);
    }

    private async Task<string?> ReactAsync(DispatchTurn turn, string roomId, OutboxAction action, ReactionPayload reaction, CancellationToken cancellationToken)
    {
        var target = await EventIdOfMessageAsync(turn, reaction.MessageId, cancellationToken)
            ?? throw new MatrixApiException(System.Net.HttpStatusCode.NotFound, "M_NOT_FOUND", $"Message {reaction.MessageId} never reached Matrix; its reaction cannot either.");
        await EnsureGhostAsync(reaction.UserId, cancellationToken);
        var content = new JsonObject
        {
            ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = target, ["key"] = reaction.Reaction },
            [ActionField] = action.TxnId,
        };
        var eventId = await api.SendEventAsync(roomId, "m.reaction", action.TxnId, content, As(reaction.UserId), action.CreatedAt, cancellationToken);
        turn.ReactionSent(action.ConversationId, reaction, eventId);
        return eventId;
    }

    private async Task<string?> UnreactAsync(string roomId, OutboxAction action, ReactionPayload reaction, CancellationToken cancellationToken)
    {
        var eventId = await events.LatestReactionEventAsync(reaction.MessageId, reaction.UserId, reaction.Reaction, cancellationToken);
        return eventId is null ? null : await api.RedactAsync(roomId, eventId, action.TxnId, RedactionContent(action, "Reaction removed"), As(reaction.UserId), action.CreatedAt, cancellationToken);
    }

    private static JsonObject RedactionContent(OutboxAction action, string reason) => new() { ["reason"] = reason, [ActionField] = action.TxnId };

    /// <summary>
    /// The rich reply fallback (spec v1.2, what Element and older clients show): the parent quoted ahead of the body and
    /// inside <c>&lt;mx-reply&gt;</c> ahead of the formatted body.
    /// </summary>
    private async Task AddReplyFallbackAsync(JsonObject content, string roomId, string parentEventId, MessageDto parent, CancellationToken cancellationToken)
    {
        var parentSender = await users.MatrixUserIdAsync(parent.SenderId, cancellationToken);
        var quoted = parent.Content ?? parent.Media?.FileName ?? "";
        var body = (string?)content["body"] ?? "";
        content["body"] = string.Join('\n', quoted.Split('\n').Select((line, i) => i == 0 ? $"> <{parentSender}> {line}" : $"> {line}")) + "\n\n" + body;
        content["format"] = "org.matrix.custom.html";
        content["formatted_body"] =
            $"<mx-reply><blockquote><a href=\"https://matrix.to/#/{Uri.EscapeDataString(roomId)}/{Uri.EscapeDataString(parentEventId)}\">In reply to</a> " +
            $"<a href=\"https://matrix.to/#/{Uri.EscapeDataString(parentSender)}\">{WebUtility.HtmlEncode(parentSender)}</a><br />" +
            $"{WebUtility.HtmlEncode(quoted).Replace("\n", "<br />")}</blockquote></mx-reply>{WebUtility.HtmlEncode(body).Replace("\n", "<br />")}";
    }

    /// <summary>Uploads the (decrypted) file to the homeserver's media repository and describes it as Matrix clients expect.</summary>
    private async Task<JsonObject> MediaContentAsync(MessageDto message, MediaDto media, CancellationToken cancellationToken)
    {
        var download = await mediaFiles.OpenForBridgeAsync(media.Id, cancellationToken)
            ?? throw new MatrixApiException(System.Net.HttpStatusCode.NotFound, "M_NOT_FOUND", $"Media {media.Id} is gone.");
        string uri;
        await using (download.Content)
        {
            uri = await api.UploadAsync(download.Content, media.ContentType, media.FileName, As(message.SenderId), cancellationToken);
        }
        var info = new JsonObject { ["mimetype"] = media.ContentType, ["size"] = media.SizeBytes };
        if (media.DurationMs is { } duration)
        {
            info["duration"] = duration;
        }
        var content = TextContent(message.SenderId, message.Content ?? media.FileName ?? "file");
        content["msgtype"] = message.Type switch
        {
            MessageKinds.Audio => "m.audio",
            MessageKinds.Image => "m.image",
            _ when media.ContentType.StartsWith("video/", StringComparison.OrdinalIgnoreCase) => "m.video",
            _ => "m.file",
        };
        content["url"] = uri;
        content["info"] = info;
        if (media.FileName is not null)
        {
            content["filename"] = media.FileName;
        }
        return content;
    }

    private JsonObject TextContent(Guid senderId, string body)
    {
        if (Appservice)
        {
            return new JsonObject { ["msgtype"] = "m.text", ["body"] = body };
        }
        // One account speaks for everyone: say who in a field apps can read and in a fallback people can.
        return new JsonObject
        {
            ["msgtype"] = "m.text",
            ["body"] = $"{ids.UserId(senderId)}: {body}",
            [SenderField] = senderId.ToString(),
        };
    }

    private string? As(Guid appUserId) => Appservice ? ids.UserId(appUserId) : null;

    /// <summary>Whether the user's ghost is registered (by this process or another, before or since a restart).</summary>
    public async Task<bool> HasGhostAsync(Guid userId, CancellationToken cancellationToken)
    {
        if (_ghosts.Contains(userId))
        {
            return true;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        if (await StoredGhostAsync(connection, userId) is not { } ghost)
        {
            return false;
        }
        // The row holds the name last given to the ghost, whoever gave it.
        _ghosts.Set(userId, ghost.DisplayName);
        return true;
    }

    /// <summary>Registers the user's ghost once, and keeps its display name in step with the user's token.</summary>
    private async Task EnsureGhostAsync(Guid userId, CancellationToken cancellationToken)
    {
        if (!Appservice)
        {
            return;
        }
        var displayName = await profiles.DisplayNameAsync(userId, cancellationToken);
        if (_ghosts.TryGet(userId, out var synced) && synced == displayName)
        {
            return;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        var ghost = await StoredGhostAsync(connection, userId);
        if (ghost is null)
        {
            await api.RegisterGhostAsync(ids.GhostLocalpart(userId), cancellationToken);
            // No conflict target: portals registering the same new member at once collide on either unique column
            // (the second is derived from the first), and PostgreSQL raises a collision on a column not named there.
            await connection.ExecuteAsync(
                "INSERT INTO matrix_ghosts (user_id, matrix_user_id, registered_at) VALUES (@userId, @matrixUserId, @now) ON CONFLICT DO NOTHING",
                new { userId, matrixUserId = ids.UserId(userId), now = time.UtcNowMicros() });
        }
        if (displayName is not null && ghost?.DisplayName != displayName)
        {
            var matrixUserId = ids.UserId(userId);
            await api.SendAsync(HttpMethod.Put, $"/_matrix/client/v3/profile/{Uri.EscapeDataString(matrixUserId)}/displayname",
                matrixUserId, new JsonObject { ["displayname"] = displayName }, cancellationToken);
            await connection.ExecuteAsync("UPDATE matrix_ghosts SET display_name = @displayName WHERE user_id = @userId", new { displayName, userId });
        }
        _ghosts.Set(userId, displayName);
    }

    private static Task<GhostRow?> StoredGhostAsync(DbConnection connection, Guid userId) =>
        connection.QuerySingleOrDefaultAsync<GhostRow?>("SELECT display_name FROM matrix_ghosts WHERE user_id = @userId", new { userId });

    private sealed class GhostRow
    {
        public string? DisplayName { get; init; }
    }

    public async Task<string?> RoomIdAsync(Guid conversationId, CancellationToken cancellationToken) =>
        _rooms.TryGet(conversationId, out var known) && known is not null ? known : await StoredRoomIdAsync(conversationId, cancellationToken);

    /// <summary>The conversation a Matrix room mirrors; null for a room that is not (or not yet) one of ours.</summary>
    public static Task<Guid?> ConversationOfRoomAsync(DbConnection connection, string roomId) =>
        connection.QuerySingleOrDefaultAsync<Guid?>("SELECT conversation_id FROM matrix_room_mapping WHERE matrix_room_id = @roomId", new { roomId });

    private async Task<string?> StoredRoomIdAsync(Guid conversationId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var roomId = await connection.QuerySingleOrDefaultAsync<string>(
            "SELECT matrix_room_id FROM matrix_room_mapping WHERE conversation_id = @conversationId", new { conversationId });
        if (roomId is not null)
        {
            _rooms.Set(conversationId, roomId);
        }
        return roomId;
    }

    private async Task<string?> EventIdOfMessageAsync(DispatchTurn turn, Guid messageId, CancellationToken cancellationToken)
    {
        if (turn.EventIdOf(messageId) is { } sentThisTurn)
        {
            return sentThisTurn;
        }
        return await events.EventOfMessageAsync(messageId, cancellationToken);
    }

    // The dispatcher reads every message of its batch ahead (ReadAheadAsync) before sending any of it.
    private static MessageDto MessageOf(DispatchTurn turn, OutboxAction action) =>
        turn.Message(action.MessageId) ?? throw new MatrixApiException(HttpStatusCode.NotFound, null, $"Message {action.MessageId} is no longer stored.");

    private static T Payload<T>(OutboxAction action) => OutboxPayloads.Read<T>(action);
}
