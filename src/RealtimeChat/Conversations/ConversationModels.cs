namespace RealtimeChat.Conversations;

public enum ConversationKind
{
    Direct,
    Group,
}

public enum MemberRole
{
    Member,
    Admin,
    Owner,
}

public sealed record CreateConversationRequest(ConversationKind? Kind, string? Name, List<Guid>? MemberIds);

public sealed record UpdateConversationRequest(string? Name);

public sealed record AddMemberRequest(Guid? UserId, MemberRole? Role);

public sealed record UpdateMemberRequest(MemberRole? Role);

/// <param name="MatrixUserId">Set for a participant who is a Matrix user, not an app user (mirrored rooms only).</param>
/// <param name="DisplayName">A Matrix user's display name, or the name claim of an app user's latest token.</param>
public sealed record MemberDto(Guid UserId, MemberRole Role, DateTimeOffset JoinedAt, long LastReadSeq, string? MatrixUserId = null, string? DisplayName = null);

public sealed record LastMessagePreview(Guid Id, Guid SenderId, string Type, string? Preview, bool Deleted, DateTimeOffset CreatedAt);

public sealed record ConversationDto(
    Guid Id,
    ConversationKind Kind,
    string? Name,
    Guid CreatedBy,
    DateTimeOffset CreatedAt,
    DateTimeOffset LastActivityAt,
    long LastSeq,
    MemberRole MyRole,
    long LastReadSeq,
    long UnreadCount,
    int MemberCount,
    LastMessagePreview? LastMessage,
    IReadOnlyList<MemberDto>? Members);

public sealed record ConversationPage(IReadOnlyList<ConversationDto> Conversations, string? NextCursor);

/// <summary>A row of <c>conversations</c> joined with the caller's membership.</summary>
internal sealed class ConversationRow
{
    public Guid Id { get; init; }
    public string Kind { get; init; } = "";
    public string? Name { get; init; }
    public Guid CreatedBy { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public long LastSeq { get; init; }
    public Guid? LastMessageId { get; init; }
    public DateTimeOffset LastActivityAt { get; init; }
    public string Role { get; init; } = "";
    public long LastReadSeq { get; init; }
    public long UnreadCount { get; init; }
    public int MemberCount { get; init; }
}

internal sealed class MemberRow
{
    public Guid ConversationId { get; init; }
    public Guid UserId { get; init; }
    public string Role { get; init; } = "";
    public DateTimeOffset JoinedAt { get; init; }
    public long LastReadSeq { get; init; }
    public string? DisplayName { get; init; }

    public const string Select =
        """
        SELECT cm.conversation_id, cm.user_id, cm.role, cm.joined_at, cm.last_read_seq, up.display_name
          FROM conversation_members cm
          LEFT JOIN user_profiles up ON up.user_id = cm.user_id
        """;

    public MemberDto ToDto(ExternalMember? external) =>
        new(UserId, Roles.Parse(Role), JoinedAt, LastReadSeq, external?.MatrixUserId, external?.DisplayName ?? DisplayName);
}

internal static class Roles
{
    public static MemberRole Parse(string role) => role switch
    {
        "owner" => MemberRole.Owner,
        "admin" => MemberRole.Admin,
        _ => MemberRole.Member,
    };

    public static string ToDb(MemberRole role) => role switch
    {
        MemberRole.Owner => "owner",
        MemberRole.Admin => "admin",
        _ => "member",
    };

    public static bool CanManage(this MemberRole role) => role is MemberRole.Owner or MemberRole.Admin;
}
