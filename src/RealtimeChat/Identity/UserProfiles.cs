using System.Collections.Concurrent;
using System.Security.Claims;
using Dapper;
using RealtimeChat.Storage;

namespace RealtimeChat.Identity;

/// <summary>
/// Display names as the identity provider states them in the token's <c>name</c> claim. Stored when they change
/// (checked against a memory cache, so a request costs no write), read by the Matrix bridge for ghost users.
/// </summary>
public sealed class UserProfiles(ChatDatabase database, TimeProvider time)
{
    private const int MaxLength = 255;
    private readonly ConcurrentDictionary<Guid, string?> _names = new();

    public async Task ObserveAsync(ClaimsPrincipal user, CancellationToken cancellationToken)
    {
        var name = user.FindFirstValue("name")?.Trim();
        if (string.IsNullOrEmpty(name) || !Guid.TryParse(user.FindFirstValue("sub"), out var userId))
        {
            return;
        }
        name = name.Length > MaxLength ? name[..MaxLength] : name;
        if (_names.TryGetValue(userId, out var known) && known == name)
        {
            return;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            """
            INSERT INTO user_profiles (user_id, display_name, updated_at) VALUES (@userId, @name, @now)
            ON CONFLICT (user_id) DO UPDATE SET display_name = @name, updated_at = @now
            """,
            new { userId, name, now = time.UtcNowMicros() });
        _names[userId] = name;
    }

    public async Task<string?> DisplayNameAsync(Guid userId, CancellationToken cancellationToken)
    {
        if (_names.TryGetValue(userId, out var name))
        {
            return name;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        name = await connection.QuerySingleOrDefaultAsync<string>("SELECT display_name FROM user_profiles WHERE user_id = @userId", new { userId });
        _names[userId] = name;
        return name;
    }
}
