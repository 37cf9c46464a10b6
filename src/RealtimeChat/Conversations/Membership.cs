using System.Data.Common;
using Dapper;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Conversations;

public static class Membership
{
    /// <summary>The caller's role, or 404 (not 403) for a conversation they are not in.</summary>
    public static async Task<MemberRole> RequireMemberAsync(
        this DbConnection connection, Guid conversationId, Guid userId, DbTransaction? transaction = null)
    {
        var role = await connection.QuerySingleOrDefaultAsync<string>(
            "SELECT role FROM conversation_members WHERE conversation_id = @conversationId AND user_id = @userId",
            new { conversationId, userId }, transaction);
        return role is null ? throw ApiException.ConversationNotFound() : Roles.Parse(role);
    }
}
