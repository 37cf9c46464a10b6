using System.Data.Common;
using Dapper;
using RealtimeChat.Conversations;
using RealtimeChat.Storage;

namespace RealtimeChat.Messages;

/// <summary>Turns stored rows into what clients see: decrypted content, media links, reaction summaries.</summary>
public sealed class MessageRenderer(ContentCipher cipher, IMessageDelivery delivery)
{
    private const int PreviewLength = 120;

    internal async Task<List<MessageDto>> RenderAsync(DbConnection connection, IReadOnlyList<MessageRow> rows, DbTransaction? transaction = null)
    {
        if (rows.Count == 0)
        {
            return [];
        }
        var reactions = (await connection.QueryAsync<ReactionRow>(
                $"SELECT message_id, user_id, reaction, created_at FROM message_reactions WHERE {SqlDialect.InList(connection, "message_id", "ids")} ORDER BY created_at, user_id",
                new { ids = rows.Select(r => r.Id).ToArray() }, transaction))
            .ToLookup(r => r.MessageId);
        var states = await delivery.OfAsync(connection, [.. rows.Select(r => r.Id)], transaction);
        return rows.Select(row => Render(row, reactions[row.Id], states.GetValueOrDefault(row.Id))).ToList();
    }

    /// <summary>
    /// Messages as stored (decrypted, with their media), without reactions or delivery state: what another feature (the
    /// bridge) mirrors. Deleted messages are included, as tombstones.
    /// </summary>
    public async Task<List<MessageDto>> ReadStoredAsync(DbConnection connection, IReadOnlyCollection<Guid> ids, CancellationToken cancellationToken) =>
        (await connection.QueryAsync<MessageRow>(new CommandDefinition(
            MessageRow.Select + " WHERE " + SqlDialect.InList(connection, "m.id", "ids"), new { ids = ids.ToArray() }, cancellationToken: cancellationToken)))
        .Select(row => Render(row, [], null))
        .ToList();

    private MessageDto Render(MessageRow row, IEnumerable<ReactionRow> reactions, MatrixDelivery? state) => new(
        row.Id,
        row.ConversationId,
        row.Seq,
        row.SenderId,
        row.Kind,
        row.Content is null ? null : cipher.DecryptText(row.Content, row.Id),
        row.MediaId is { } mediaId && row.MediaContentType is not null
            ? new MediaDto(mediaId, row.MediaContentType, row.MediaSizeBytes ?? 0, row.MediaDurationMs, row.MediaFileName, $"/api/v1/media/{mediaId}")
            : null,
        row.ReplyTo,
        row.ClientMessageId,
        row.CreatedAt,
        row.EditedAt,
        row.DeletedAt,
        reactions
            .GroupBy(r => r.Reaction)
            .Select(g => new ReactionSummary(g.Key, g.Count(), g.Select(r => r.UserId).ToList()))
            .ToList(),
        state);

    internal async Task<List<MessageDto>> LoadAsync(DbConnection connection, IEnumerable<Guid> ids, DbTransaction? transaction = null)
    {
        var rows = (await connection.QueryAsync<MessageRow>(
            MessageRow.Select + " WHERE " + SqlDialect.InList(connection, "m.id", "ids"), new { ids = ids.Distinct().ToArray() }, transaction)).AsList();
        return await RenderAsync(connection, rows, transaction);
    }

    public async Task<Dictionary<Guid, LastMessagePreview>> PreviewsAsync(DbConnection connection, IEnumerable<Guid> messageIds, CancellationToken cancellationToken)
    {
        var ids = messageIds.Distinct().ToArray();
        if (ids.Length == 0)
        {
            return [];
        }
        var rows = await connection.QueryAsync<MessageRow>(MessageRow.Select + " WHERE " + SqlDialect.InList(connection, "m.id", "ids"), new { ids });
        return rows.ToDictionary(row => row.Id, row =>
        {
            var text = row.Content is null ? null : cipher.DecryptText(row.Content, row.Id);
            var preview = text is null ? row.MediaFileName : text.Length > PreviewLength ? text[..PreviewLength] + "…" : text;
            return new LastMessagePreview(row.Id, row.SenderId, row.Kind, row.DeletedAt is null ? preview : null, row.DeletedAt is not null, row.CreatedAt);
        });
    }
}
