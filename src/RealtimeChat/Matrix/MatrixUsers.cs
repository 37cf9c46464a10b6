using System.Data.Common;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>Who a Matrix sender is in the app: an app user (seed-style id in client mode) or an external participant.</summary>
public sealed class MatrixUsers(ChatDatabase database, MatrixIds ids, IOptions<MatrixOptions> options, TimeProvider time) : Conversations.IExternalMembers, IDisposable
{
    // The display name stored for each Matrix user this process met, so that their events store nothing unless it changed.
    private readonly RowCache<string, string> _stored = new(100_000, TimeSpan.FromHours(1), renewedOnUse: true);

    public void Dispose() => _stored.Dispose();

    /// <summary>
    /// A stable UUID for a Matrix user who is not an app user: the same id gives the same UUID on every install
    /// (a name-based UUID, version 8, over SHA-256 of the user id), so it survives a lost mapping table.
    /// </summary>
    public static Guid ExternalUserId(string matrixUserId)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes("matrix:" + matrixUserId));
        var bytes = hash.AsSpan(0, 16).ToArray();
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }

    /// <summary>Who an app member is on Matrix: their own Matrix id if they came from Matrix, else the id that speaks for them.</summary>
    public async Task<string> MatrixUserIdAsync(Guid userId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>(
            "SELECT matrix_user_id FROM matrix_external_users WHERE user_id = @userId", new { userId }) ?? ids.UserId(userId);
    }

    /// <summary>The user id a Matrix user has in the app, without storing anything about them.</summary>
    public Guid KnownUserId(string matrixUserId) =>
        options.Value.Mode == MatrixMode.Client && ids.AppUserId(matrixUserId) is { } appUser ? appUser : ExternalUserId(matrixUserId);

    public async Task<Guid> AppUserIdAsync(string matrixUserId, string? displayName, CancellationToken cancellationToken)
    {
        // Seed-style ids name app users only in client mode, where the service provisions those accounts. In
        // appservice mode anyone might register such a localpart, so it is not proof of being that app user.
        if (options.Value.Mode == MatrixMode.Client && ids.AppUserId(matrixUserId) is { } appUser)
        {
            return appUser;
        }
        var userId = ExternalUserId(matrixUserId);
        // Stored once per user and again only when a new display name arrives, not on every event they send.
        if (_stored.TryGet(matrixUserId, out var storedName) && (displayName is null || displayName == storedName))
        {
            return userId;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        await connection.ExecuteAsync(
            """
            INSERT INTO matrix_external_users (user_id, matrix_user_id, display_name, created_at)
            VALUES (@userId, @matrixUserId, @displayName, @now)
            ON CONFLICT (user_id) DO UPDATE SET display_name = COALESCE(@displayName, matrix_external_users.display_name)
            """,
            new { userId, matrixUserId, displayName, now = time.UtcNowMicros() });
        _stored.Set(matrixUserId, displayName ?? storedName);
        return userId;
    }

    public async Task<IReadOnlyDictionary<Guid, Conversations.ExternalMember>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> userIds)
    {
        if (userIds.Count == 0)
        {
            return new Dictionary<Guid, Conversations.ExternalMember>();
        }
        var rows = await connection.QueryAsync<(Guid UserId, string MatrixUserId, string? DisplayName)>(
            $"SELECT user_id, matrix_user_id, display_name FROM matrix_external_users WHERE {SqlDialect.InList(connection, "user_id", "ids")}",
            new { ids = userIds.ToArray() });
        return rows.ToDictionary(r => r.UserId, r => new Conversations.ExternalMember(r.MatrixUserId, r.DisplayName));
    }
}
