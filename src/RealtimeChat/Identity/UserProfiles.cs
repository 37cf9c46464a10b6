using System.Security.Claims;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Identity;

/// <summary>
/// Display names as the identity provider states them in the token's <c>name</c> claim. Stored when they change
/// (checked against a memory cache, so a request costs no write), read by the Matrix bridge for ghost users. A name
/// this process knows is read again after <see cref="AuthOptions.ProfileCacheLifetime"/>: with several instances on one
/// database, the user's last request may have gone to another.
/// </summary>
public sealed class UserProfiles(ChatDatabase database, IOptions<AuthOptions> options, TimeProvider time) : IDisposable
{
    private const int MaxLength = 255;

    // The name each user's tokens last stated here, so that a request stores nothing unless it changed.
    private readonly RowCache<Guid, string> _observed = new(100_000, TimeSpan.FromHours(1), renewedOnUse: true);

    // Names as read (or stored) here, for the bridge.
    private readonly RowCache<Guid, string> _names = new(100_000, options.Value.ProfileCacheLifetime, renewedOnUse: false);

    public async Task ObserveAsync(ClaimsPrincipal user, CancellationToken cancellationToken)
    {
        var name = DisplayName(user.FindFirstValue("name"));
        if (name is null || !Guid.TryParse(user.FindFirstValue("sub"), out var userId))
        {
            return;
        }
        if (_observed.TryGet(userId, out var known) && known == name)
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
        _observed.Set(userId, name);
        _names.Set(userId, name);
    }

    /// <summary>
    /// The name as shown, without control characters: the claim is the identity provider's, so what cannot be shown
    /// (or stored: PostgreSQL text holds no U+0000) is dropped rather than refused, which would lock the user out of
    /// every request.
    /// </summary>
    internal static string? DisplayName(string? claim)
    {
        if (claim is null)
        {
            return null;
        }
        // A tab or line break between two words still separates them.
        var name = (claim.Any(char.IsControl)
            ? new string([.. claim.Where(c => !char.IsControl(c) || char.IsWhiteSpace(c)).Select(c => char.IsControl(c) ? ' ' : c)])
            : claim).Trim();
        if (name.Length > MaxLength)
        {
            name = name[..(char.IsHighSurrogate(name[MaxLength - 1]) ? MaxLength - 1 : MaxLength)];
        }
        return name.Length == 0 ? null : name;
    }

    public async Task<string?> DisplayNameAsync(Guid userId, CancellationToken cancellationToken)
    {
        if (_names.TryGet(userId, out var name))
        {
            return name;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        name = await connection.QuerySingleOrDefaultAsync<string>("SELECT display_name FROM user_profiles WHERE user_id = @userId", new { userId });
        _names.Set(userId, name);
        return name;
    }

    public void Dispose()
    {
        _observed.Dispose();
        _names.Dispose();
    }
}
