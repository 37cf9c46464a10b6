using System.Data.Common;
using System.Text;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Conversations;

public sealed class ConversationOptions
{
    public const string Section = "Conversations";

    [System.ComponentModel.DataAnnotations.Range(2, 100_000)]
    public int MaxMembers { get; set; } = 1000;

    [System.ComponentModel.DataAnnotations.Range(1, 1000)]
    public int MaxNameLength { get; set; } = 200;
}

public sealed class ConversationService(
    ChatDatabase database,
    ChatEventPipeline events,
    MessageRenderer renderer,
    IExternalMembers externalMembers,
    TimeProvider time,
    IOptions<ConversationOptions> options)
{
    private const int DefaultPageSize = 50;
    private const int MaxPageSize = 200;

    /// <returns>The conversation and whether it was created now (false: the existing direct conversation).</returns>
    public async Task<(ConversationDto Conversation, bool Created)> CreateAsync(
        Guid userId, CreateConversationRequest request, CancellationToken cancellationToken)
    {
        var others = (request.MemberIds ?? []).Where(id => id != userId).Distinct().ToList();
        if ((request.MemberIds ?? []).Any(id => id == Guid.Empty))
        {
            throw ApiException.BadRequest("invalid_member_id", "member_ids must be non-empty UUIDs.");
        }

        return request.Kind switch
        {
            ConversationKind.Direct => await CreateDirectAsync(userId, others, cancellationToken),
            ConversationKind.Group => (await CreateGroupAsync(userId, ValidName(request.Name), others, cancellationToken), true),
            _ => throw ApiException.BadRequest("invalid_kind", "kind must be \"direct\" or \"group\"."),
        };
    }

    private async Task<(ConversationDto, bool)> CreateDirectAsync(Guid userId, List<Guid> others, CancellationToken cancellationToken)
    {
        if (others.Count != 1)
        {
            throw ApiException.BadRequest("direct_needs_one_other_member", "A direct conversation has exactly one other member.");
        }
        var directKey = DirectKey(userId, others[0]);
        var existing = await FindDirectAsync(directKey, userId, cancellationToken);
        if (existing is not null)
        {
            return (existing, false);
        }
        try
        {
            return (await InsertAsync(userId, ConversationKind.Direct, null, directKey, others, cancellationToken), true);
        }
        catch (Exception ex) when (DbErrors.IsUniqueViolation(ex))
        {
            // Both users created it at the same moment; the other request won.
            return ((await FindDirectAsync(directKey, userId, cancellationToken))!, false);
        }
    }

    private async Task<ConversationDto> CreateGroupAsync(Guid userId, string name, List<Guid> others, CancellationToken cancellationToken)
    {
        if (others.Count + 1 > options.Value.MaxMembers)
        {
            throw ApiException.BadRequest("too_many_members", $"A conversation has at most {options.Value.MaxMembers} members.");
        }
        return await InsertAsync(userId, ConversationKind.Group, name, null, others, cancellationToken);
    }

    private async Task<ConversationDto> InsertAsync(
        Guid userId, ConversationKind kind, string? name, string? directKey, List<Guid> others, CancellationToken cancellationToken)
    {
        var id = Guid.CreateVersion7();
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(id, events, cancellationToken);
        await write.ExecuteAsync(
            """
            INSERT INTO conversations (id, kind, name, direct_key, created_by, created_at, last_seq, last_activity_at)
            VALUES (@id, @kind, @name, @directKey, @userId, @now, 0, @now)
            """,
            new { id, kind = kind == ConversationKind.Direct ? "direct" : "group", name, directKey, userId, now });

        var members = new List<MemberDto> { new(userId, kind == ConversationKind.Group ? MemberRole.Owner : MemberRole.Member, now, 0) };
        members.AddRange(others.Select(other => new MemberDto(other, MemberRole.Member, now, 0)));
        if (write.IsPostgres)
        {
            // One statement, not a round trip per member: a group of thousands would otherwise keep a connection and
            // the database busy for as many round trips, at everyone else's expense.
            await write.ExecuteAsync(
                """
                INSERT INTO conversation_members (conversation_id, user_id, role, joined_at, last_read_seq)
                SELECT @conversationId, m.user_id, m.role, @now, 0 FROM unnest(@userIds, @roles) AS m(user_id, role)
                """,
                new { conversationId = id, userIds = members.Select(m => m.UserId).ToArray(), roles = members.Select(m => Roles.ToDb(m.Role)).ToArray(), now });
        }
        else
        {
            // In-process: a statement per member costs no round trip.
            await write.ExecuteAsync(
                """
                INSERT INTO conversation_members (conversation_id, user_id, role, joined_at, last_read_seq)
                VALUES (@conversationId, @UserId, @role, @JoinedAt, 0)
                """,
                members.Select(m => new { conversationId = id, m.UserId, role = Roles.ToDb(m.Role), m.JoinedAt }));
        }

        var seq = await write.NextSequenceAsync(id, now);
        var created = new ConversationCreated(id, kind, name, userId, now, members);
        await write.AppendEventAsync(id, seq, ChatEventTypes.ConversationCreated, userId, now, created);
        await write.CommitAsync(cancellationToken);

        return new ConversationDto(id, kind, name, userId, now, now, seq, members[0].Role, 0, 0, members.Count, null, members);
    }

    public async Task<ConversationPage> ListAsync(Guid userId, string? cursor, int? limit, CancellationToken cancellationToken)
    {
        var pageSize = PageSize(limit);
        var (after, afterId) = DecodeCursor(cursor);
        await using var connection = await database.OpenAsync(cancellationToken);
        var afterCursor = afterId is null
            ? ""
            : " AND (c.last_activity_at < @after OR (c.last_activity_at = @after AND c.id < @afterId))";
        var rows = (await connection.QueryAsync<ConversationRow>(
            ConversationSelect + " WHERE m.user_id = @userId" + afterCursor +
            " ORDER BY c.last_activity_at DESC, c.id DESC LIMIT @take",
            new { userId, after, afterId, take = pageSize + 1 })).AsList();

        var page = rows.Take(pageSize).ToList();
        var previews = await renderer.PreviewsAsync(connection, page.Where(r => r.LastMessageId is not null).Select(r => r.LastMessageId!.Value), cancellationToken);
        var next = rows.Count > pageSize ? EncodeCursor(page[^1]) : null;
        return new ConversationPage(
            page.Select(row => ToDto(row, row.LastMessageId is { } m ? previews.GetValueOrDefault(m) : null, null)).ToList(),
            next);
    }

    public async Task<ConversationDto> GetAsync(Guid userId, Guid conversationId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<ConversationRow>(
            ConversationSelect + " WHERE m.user_id = @userId AND c.id = @conversationId",
            new { userId, conversationId }) ?? throw ApiException.ConversationNotFound();
        var members = await MembersOfAsync(connection, conversationId);
        var previews = row.LastMessageId is { } lastId
            ? await renderer.PreviewsAsync(connection, [lastId], cancellationToken)
            : new Dictionary<Guid, LastMessagePreview>();
        return ToDto(row, row.LastMessageId is { } id ? previews.GetValueOrDefault(id) : null, members);
    }

    /// <summary>The conversation as it is now, in the shape of its creation event (e.g. to mirror it somewhere new).</summary>
    public async Task<ConversationCreated?> SnapshotAsync(Guid conversationId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<ConversationRow>(
            "SELECT id, kind, name, created_by, created_at FROM conversations WHERE id = @conversationId", new { conversationId });
        if (row is null)
        {
            return null;
        }
        return new ConversationCreated(
            row.Id, row.Kind == "direct" ? ConversationKind.Direct : ConversationKind.Group, row.Name, row.CreatedBy, row.CreatedAt,
            await MembersOfAsync(connection, conversationId));
    }

    public async Task<ConversationDto> RenameAsync(
        Guid userId, Guid conversationId, UpdateConversationRequest request, CancellationToken cancellationToken, EventOrigin origin = default)
    {
        var name = ValidName(request.Name);
        var now = time.UtcNowMicros();
        await using (var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin))
        {
            var role = await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
            await RequireGroupAsync(write, conversationId);
            // Matrix enforces its own power levels on room names before the change reaches us.
            if (!role.CanManage() && origin.IsApp)
            {
                throw ApiException.Forbidden("not_allowed", "Only the owner or an admin can rename the conversation.");
            }
            await write.ExecuteAsync("UPDATE conversations SET name = @name WHERE id = @conversationId", new { name, conversationId });
            var seq = await write.NextSequenceAsync(conversationId, now);
            await write.AppendEventAsync(conversationId, seq, ChatEventTypes.ConversationUpdated, userId, now, new ConversationUpdated(name));
            await write.CommitAsync(cancellationToken);
        }
        return await GetAsync(userId, conversationId, cancellationToken);
    }

    public async Task<IReadOnlyList<MemberDto>> MembersAsync(Guid userId, Guid conversationId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.RequireMemberAsync(conversationId, userId);
        return await MembersOfAsync(connection, conversationId);
    }

    private async Task<List<MemberDto>> MembersOfAsync(DbConnection connection, Guid conversationId)
    {
        var rows = (await connection.QueryAsync<MemberRow>(
            MemberRow.Select + " WHERE cm.conversation_id = @conversationId ORDER BY cm.joined_at, cm.user_id",
            new { conversationId })).AsList();
        var external = await externalMembers.OfAsync(connection, [.. rows.Select(r => r.UserId)]);
        return rows.Select(r => r.ToDto(external.GetValueOrDefault(r.UserId))).ToList();
    }

    public async Task<MemberDto> AddMemberAsync(Guid userId, Guid conversationId, AddMemberRequest request, CancellationToken cancellationToken)
    {
        if (request.UserId is not { } newMember || newMember == Guid.Empty)
        {
            throw ApiException.BadRequest("invalid_member_id", "user_id must be a UUID.");
        }
        var newRole = request.Role ?? MemberRole.Member;
        if (newRole == MemberRole.Owner)
        {
            throw ApiException.BadRequest("invalid_role", "A conversation has one owner; add as admin or member.");
        }
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken);
        var role = await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        await RequireGroupAsync(write, conversationId);
        if (!role.CanManage() || (newRole == MemberRole.Admin && role != MemberRole.Owner))
        {
            throw ApiException.Forbidden("not_allowed", "Only the owner adds admins; the owner or an admin adds members.");
        }
        var count = await write.QuerySingleOrDefaultAsync<int>(
            "SELECT COUNT(*) FROM conversation_members WHERE conversation_id = @conversationId", new { conversationId });
        if (count >= options.Value.MaxMembers)
        {
            throw ApiException.BadRequest("too_many_members", $"A conversation has at most {options.Value.MaxMembers} members.");
        }
        var inserted = await write.ExecuteAsync(
            """
            INSERT INTO conversation_members (conversation_id, user_id, role, joined_at, last_read_seq)
            VALUES (@conversationId, @newMember, @role, @now, 0)
            ON CONFLICT (conversation_id, user_id) DO NOTHING
            """,
            new { conversationId, newMember, role = Roles.ToDb(newRole), now });
        if (inserted == 0)
        {
            throw ApiException.Conflict("already_member", "That user is already a member.");
        }
        var seq = await write.NextSequenceAsync(conversationId, now);
        var member = new MemberDto(newMember, newRole, now, 0);
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberAdded, userId, now, new MemberAdded(member, userId));
        await write.CommitAsync(cancellationToken);
        return member;
    }

    public async Task UpdateMemberAsync(Guid userId, Guid conversationId, Guid memberId, UpdateMemberRequest request, CancellationToken cancellationToken)
    {
        if (request.Role is not { } newRole)
        {
            throw ApiException.BadRequest("invalid_role", "role is required.");
        }
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken);
        var role = await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        await RequireGroupAsync(write, conversationId);
        if (role != MemberRole.Owner)
        {
            throw ApiException.Forbidden("not_allowed", "Only the owner changes roles.");
        }
        var target = await MemberRoleAsync(write, conversationId, memberId) ?? throw MemberNotFound();
        if (memberId == userId)
        {
            throw ApiException.BadRequest("invalid_role", "Transfer ownership by making another member the owner.");
        }
        if (target == newRole)
        {
            return;
        }
        var seq = await write.NextSequenceAsync(conversationId, now);
        await SetRoleAsync(write, conversationId, memberId, newRole);
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberUpdated, userId, now, new MemberUpdated(memberId, newRole, userId));
        if (newRole == MemberRole.Owner)
        {
            seq = await write.NextSequenceAsync(conversationId, now);
            await SetRoleAsync(write, conversationId, userId, MemberRole.Admin);
            await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberUpdated, userId, now, new MemberUpdated(userId, MemberRole.Admin, userId));
        }
        await write.CommitAsync(cancellationToken);
    }

    /// <summary>Removes a member, or the caller themself (leaving). An owner who leaves hands ownership on.</summary>
    public async Task RemoveMemberAsync(Guid userId, Guid conversationId, Guid memberId, CancellationToken cancellationToken)
    {
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken);
        var role = await write.Connection.RequireMemberAsync(conversationId, userId, write.Transaction);
        await RequireGroupAsync(write, conversationId);
        var target = await MemberRoleAsync(write, conversationId, memberId) ?? throw MemberNotFound();
        var leaving = memberId == userId;
        if (!leaving && !(role == MemberRole.Owner || (role == MemberRole.Admin && target == MemberRole.Member)))
        {
            throw ApiException.Forbidden("not_allowed", "The owner removes anyone; an admin removes members.");
        }

        await write.ExecuteAsync(
            "DELETE FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @memberId",
            new { conversationId, memberId });
        var seq = await write.NextSequenceAsync(conversationId, now);
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberRemoved, userId, now, new MemberRemoved(memberId, userId, leaving));

        if (target == MemberRole.Owner)
        {
            var heir = await write.QuerySingleOrDefaultAsync<Guid?>(
                """
                SELECT user_id FROM conversation_members
                 WHERE conversation_id = @conversationId
                 ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id
                 LIMIT 1
                """,
                new { conversationId });
            if (heir is { } heirId)
            {
                seq = await write.NextSequenceAsync(conversationId, now);
                await SetRoleAsync(write, conversationId, heirId, MemberRole.Owner);
                await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberUpdated, userId, now, new MemberUpdated(heirId, MemberRole.Owner, userId));
            }
        }
        await write.CommitAsync(cancellationToken);
    }

    /// <summary>
    /// Someone joined the mirrored room (a Matrix room): they become a member (no app permission applies; the room's did), except
    /// in a direct conversation, which stays between its two people whatever happens in the room.
    /// </summary>
    /// <returns>False if they were a member already.</returns>
    /// <exception cref="ApiException"><c>direct_conversation</c>: a third person cannot join a direct conversation.</exception>
    public async Task<bool> JoinFromBridgeAsync(
        Guid conversationId, Guid userId, string? matrixUserId, string? displayName, EventOrigin origin, CancellationToken cancellationToken)
    {
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin);
        var state = await write.QuerySingleOrDefaultAsync<JoinState>(
            """
            SELECT c.kind, (SELECT COUNT(*) FROM conversation_members m WHERE m.conversation_id = c.id AND m.user_id = @userId) AS memberships
              FROM conversations c WHERE c.id = @conversationId
            """,
            new { conversationId, userId }) ?? throw ApiException.ConversationNotFound();
        if (state.Memberships > 0)
        {
            return false;
        }
        if (state.Kind == "direct")
        {
            throw ApiException.Conflict("direct_conversation", "A direct conversation has exactly its two members.");
        }
        await write.ExecuteAsync(
            """
            INSERT INTO conversation_members (conversation_id, user_id, role, joined_at, last_read_seq)
            VALUES (@conversationId, @userId, 'member', @now, 0)
            """,
            new { conversationId, userId, now });
        var seq = await write.NextSequenceAsync(conversationId, now);
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberAdded, userId, now,
            new MemberAdded(new MemberDto(userId, MemberRole.Member, now, 0, matrixUserId, displayName), userId));
        await write.CommitAsync(cancellationToken);
        return true;
    }

    private sealed class JoinState
    {
        public string Kind { get; init; } = "";
        public long Memberships { get; init; }
    }

    /// <summary>Someone left or was removed from the mirrored room.</summary>
    public async Task LeaveFromBridgeAsync(Guid conversationId, Guid userId, Guid? removedBy, EventOrigin origin, CancellationToken cancellationToken)
    {
        var now = time.UtcNowMicros();
        await using var write = await database.BeginWriteAsync(conversationId, events, cancellationToken, origin);
        var removed = await write.ExecuteAsync(
            "DELETE FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @userId AND role <> 'owner'",
            new { conversationId, userId });
        if (removed == 0)
        {
            return;
        }
        var seq = await write.NextSequenceAsync(conversationId, now);
        await write.AppendEventAsync(conversationId, seq, ChatEventTypes.MemberRemoved, removedBy ?? userId, now, new MemberRemoved(userId, removedBy ?? userId, removedBy is null));
        await write.CommitAsync(cancellationToken);
    }

    private const string ConversationSelect =
        """
        SELECT c.id, c.kind, c.name, c.created_by, c.created_at, c.last_seq, c.last_message_id, c.last_activity_at,
               m.role, m.last_read_seq,
               (SELECT COUNT(*) FROM messages x
                 WHERE x.conversation_id = c.id AND x.seq > m.last_read_seq
                   AND x.sender_id <> m.user_id AND x.deleted_at IS NULL) AS unread_count,
               (SELECT COUNT(*) FROM conversation_members n WHERE n.conversation_id = c.id) AS member_count
          FROM conversation_members m
          JOIN conversations c ON c.id = m.conversation_id
        """;

    private static ConversationDto ToDto(ConversationRow row, LastMessagePreview? last, IReadOnlyList<MemberDto>? members) => new(
        row.Id,
        row.Kind == "direct" ? ConversationKind.Direct : ConversationKind.Group,
        row.Name,
        row.CreatedBy,
        row.CreatedAt,
        row.LastActivityAt,
        row.LastSeq,
        Roles.Parse(row.Role),
        row.LastReadSeq,
        row.UnreadCount,
        row.MemberCount,
        last,
        members);

    private async Task<ConversationDto?> FindDirectAsync(string directKey, Guid userId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var id = await connection.QuerySingleOrDefaultAsync<Guid?>(
            "SELECT id FROM conversations WHERE direct_key = @directKey", new { directKey });
        return id is null ? null : await GetAsync(userId, id.Value, cancellationToken);
    }

    private static async Task RequireGroupAsync(ChatTransaction write, Guid conversationId)
    {
        var kind = await write.QuerySingleOrDefaultAsync<string>("SELECT kind FROM conversations WHERE id = @conversationId", new { conversationId });
        if (kind != "group")
        {
            throw ApiException.BadRequest("not_a_group", "Direct conversations have a fixed pair of members and no name.");
        }
    }

    private static async Task<MemberRole?> MemberRoleAsync(ChatTransaction write, Guid conversationId, Guid memberId)
    {
        var role = await write.QuerySingleOrDefaultAsync<string>(
            "SELECT role FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @memberId",
            new { conversationId, memberId });
        return role is null ? null : Roles.Parse(role);
    }

    private static Task SetRoleAsync(ChatTransaction write, Guid conversationId, Guid memberId, MemberRole role) =>
        write.ExecuteAsync(
            "UPDATE conversation_members SET role = @role WHERE conversation_id = @conversationId AND user_id = @memberId",
            new { conversationId, memberId, role = Roles.ToDb(role) });

    private static ApiException MemberNotFound() => ApiException.NotFound("member_not_found", "That user is not a member.");

    private string ValidName(string? name)
    {
        name = name?.Trim();
        if (string.IsNullOrEmpty(name))
        {
            throw ApiException.BadRequest("name_required", "A group conversation needs a name.");
        }
        if (name.Any(char.IsControl))
        {
            throw ApiException.BadRequest("invalid_name", "The name must not contain control characters.");
        }
        if (name.Length > options.Value.MaxNameLength)
        {
            throw ApiException.BadRequest("name_too_long", $"The name is longer than {options.Value.MaxNameLength} characters.");
        }
        return name;
    }

    private static string DirectKey(Guid a, Guid b) => a.CompareTo(b) < 0 ? $"{a}:{b}" : $"{b}:{a}";

    private static int PageSize(int? limit) => limit switch
    {
        null => DefaultPageSize,
        < 1 or > MaxPageSize => throw ApiException.BadRequest("invalid_limit", $"limit must be between 1 and {MaxPageSize}."),
        _ => limit.Value,
    };

    private static string EncodeCursor(ConversationRow row) =>
        Convert.ToBase64String(Encoding.UTF8.GetBytes($"{row.LastActivityAt.UtcTicks}:{row.Id}"))
            .TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static (DateTimeOffset? After, Guid? AfterId) DecodeCursor(string? cursor)
    {
        if (string.IsNullOrEmpty(cursor))
        {
            return (null, null);
        }
        try
        {
            var padded = cursor.Replace('-', '+').Replace('_', '/');
            padded += new string('=', (4 - padded.Length % 4) % 4);
            var parts = Encoding.UTF8.GetString(Convert.FromBase64String(padded)).Split(':');
            return (new DateTimeOffset(long.Parse(parts[0]), TimeSpan.Zero), Guid.Parse(parts[1]));
        }
        catch (Exception ex) when (ex is FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException or OverflowException)
        {
            throw ApiException.BadRequest("invalid_cursor", "The cursor is not one this service issued.");
        }
    }
}
