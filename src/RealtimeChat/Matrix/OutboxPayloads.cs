using System.Text.Json;
using RealtimeChat.Conversations;
using RealtimeChat.Realtime;

namespace RealtimeChat.Matrix;

/// <summary>
/// What an outbox row holds: the bridge's own records, not the chat's events, so the chat's records can change without
/// touching rows that wait across a deploy. A row's <c>payload_version</c> names its shape. Version 1 is what earlier
/// versions wrote (the chat's event records, whose fields these are a subset of): rows of either version read here, and
/// an instance of the previous version reads these. A change that breaks that needs version 2 and a reader for 1.
/// </summary>
public static class OutboxPayloads
{
    public const int Version = 1;

    /// <summary>The payload of the action a chat change becomes.</summary>
    public static object From(object change) => change switch
    {
        ConversationCreated c => new CreateRoomPayload(c.Id, c.Kind, c.Name, c.CreatedBy, [.. c.Members.Select(m => new RoomMember(m.UserId))]),
        MemberAdded a => new InvitePayload(new RoomMember(a.Member.UserId)),
        MemberRemoved r => new RemoveMemberPayload(r.UserId, r.RemovedBy, r.Left),
        ConversationUpdated u => new RenamePayload(u.Name),
        MessageReference m => new MessagePayload(m.MessageId),
        MessageDeleted d => new RedactPayload(d.MessageId, d.DeletedBy),
        ReactionChanged r => new ReactionPayload(r.MessageId, r.UserId, r.Reaction),
        ReadUpdated r => new ReadReceiptPayload(r.UserId, r.LastReadSeq),
        _ => throw new NotSupportedException($"No Matrix action mirrors a {change.GetType().Name}."),
    };

    public static string Serialize(object payload) => JsonSerializer.Serialize(payload, payload.GetType(), ChatJson.Options);

    /// <summary>Whether this version reads rows of <paramref name="version"/> (others are parked at once).</summary>
    public static bool Reads(int version) => version == Version;

    public static T Read<T>(OutboxAction action) =>
        JsonSerializer.Deserialize<T>(action.Payload, ChatJson.Options) ?? throw new JsonException($"Outbox row {action.Id} has an empty payload.");
}

/// <summary>create_room: the room's conversation and who is in it.</summary>
public sealed record CreateRoomPayload(Guid Id, ConversationKind Kind, string? Name, Guid CreatedBy, IReadOnlyList<RoomMember> Members);

public sealed record RoomMember(Guid UserId);

/// <summary>invite (the member object is version 1's shape).</summary>
public sealed record InvitePayload(RoomMember Member);

/// <summary>remove_member: left on their own (the ghost leaves) or removed (the bot kicks).</summary>
public sealed record RemoveMemberPayload(Guid UserId, Guid RemovedBy, bool Left);

public sealed record RenamePayload(string Name);

/// <summary>send_message and edit: the message is read as it is when the action runs.</summary>
public sealed record MessagePayload(Guid MessageId);

public sealed record RedactPayload(Guid MessageId, Guid DeletedBy);

/// <summary>react and unreact.</summary>
public sealed record ReactionPayload(Guid MessageId, Guid UserId, string Reaction);

public sealed record ReadReceiptPayload(Guid UserId, long LastReadSeq);
