using System.Text.Json;
using Dapper;
using RealtimeChat.Messages;
using RealtimeChat.Storage;

namespace RealtimeChat.Realtime;

/// <summary>Reads missed events back from <c>conversation_events</c>, rendering messages from their current rows.</summary>
public sealed class EventReplayer(ChatDatabase database, MessageRenderer renderer)
{
    public async Task<(IReadOnlyList<OutboundFrame> Frames, long LatestSeq)> LoadAsync(
        Guid conversationId, long afterSeq, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var latest = await connection.QuerySingleOrDefaultAsync<long>(
            "SELECT last_seq FROM conversations WHERE id = @conversationId", new { conversationId });
        var rows = (await connection.QueryAsync<StoredEvent>(
            """
            SELECT seq, type, actor_id, message_id, payload, created_at
              FROM conversation_events
             WHERE conversation_id = @conversationId AND seq > @afterSeq
             ORDER BY seq
             LIMIT @limit
            """,
            new { conversationId, afterSeq, limit })).AsList();

        var messageIds = rows.Where(r => ChatEventTypes.CarriesMessage(r.Type) && r.MessageId is not null).Select(r => r.MessageId!.Value);
        var messages = (await renderer.LoadAsync(connection, messageIds)).ToDictionary(m => m.Id);

        var frames = rows.Select(row =>
        {
            object data = ChatEventTypes.CarriesMessage(row.Type) && row.MessageId is { } id && messages.TryGetValue(id, out var message)
                ? message
                : JsonSerializer.Deserialize<JsonElement>(row.Payload);
            var frame = new EventFrame(row.Type, conversationId, row.Seq, row.ActorId, row.CreatedAt, data);
            return new OutboundFrame(conversationId, row.Seq, JsonSerializer.SerializeToUtf8Bytes(frame, ChatJson.Options), 0);
        }).ToList();
        return (frames, latest);
    }

    private sealed class StoredEvent
    {
        public long Seq { get; init; }
        public string Type { get; init; } = "";
        public Guid? ActorId { get; init; }
        public Guid? MessageId { get; init; }
        public string Payload { get; init; } = "";
        public DateTimeOffset CreatedAt { get; init; }
    }
}
