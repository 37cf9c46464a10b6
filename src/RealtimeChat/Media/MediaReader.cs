using Dapper;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Media;

public sealed record MediaDownload(Stream Content, string ContentType, string? FileName, DateTimeOffset CreatedAt);

/// <summary>
/// Opens stored files as decrypting, seekable streams. Kept apart from uploads so that readers (the media endpoint,
/// the Matrix bridge) do not depend on the message-writing path.
/// </summary>
public sealed class MediaReader(ChatDatabase database, MediaCipher mediaCipher, IMediaStore store)
{
    private const string Columns = "md.id, md.storage_key, md.content_type, md.size_bytes, md.file_name, md.wrapped_key, md.created_at";

    /// <summary>The file, if <paramref name="userId"/> is a member of its conversation; otherwise 404 as for an unknown id.</summary>
    public async Task<MediaDownload> OpenAsync(Guid userId, Guid mediaId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<MediaRow>(
            $"""
            SELECT {Columns}
              FROM media md
              JOIN conversation_members cm ON cm.conversation_id = md.conversation_id AND cm.user_id = @userId
             WHERE md.id = @mediaId
            """,
            new { mediaId, userId });
        return row is null ? throw ApiException.NotFound("media_not_found", "No such media.") : Open(row);
    }

    /// <summary>The file for the Matrix bridge, which forwards what the conversation's members already shared.</summary>
    public async Task<MediaDownload?> OpenForBridgeAsync(Guid mediaId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var row = await connection.QuerySingleOrDefaultAsync<MediaRow>($"SELECT {Columns} FROM media md WHERE md.id = @mediaId", new { mediaId });
        return row is null ? null : Open(row);
    }

    private MediaDownload Open(MediaRow row) => new(
        new MediaReadStream(store, row.StorageKey, mediaCipher.OpenKey(row.WrappedKey, row.Id), row.SizeBytes),
        row.ContentType, row.FileName, row.CreatedAt);

    private sealed class MediaRow
    {
        public Guid Id { get; init; }
        public string StorageKey { get; init; } = "";
        public string ContentType { get; init; } = "";
        public long SizeBytes { get; init; }
        public string? FileName { get; init; }
        public byte[] WrappedKey { get; init; } = [];
        public DateTimeOffset CreatedAt { get; init; }
    }
}
