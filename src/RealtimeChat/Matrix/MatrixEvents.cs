using System.Data.Common;
using Dapper;
using Microsoft.Data.Sqlite;
using Npgsql;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// The one owner of <c>matrix_events</c>: every Matrix event the bridge knows, whichever side made it, and the message
/// or reaction it is. Two rules live here:
/// <list type="bullet">
/// <item>A Matrix event changes the chat at most once. Every change bridged from Matrix writes its event id in the
/// change's own transaction (this is a transactional sink), so a redelivered event (a retried or concurrent appservice
/// transaction, a restarted homeserver numbering its transactions from 1 again, a /sync batch read twice) fails on the
/// primary key and its change rolls back with it.</item>
/// <item>A message is one Matrix event (a unique index), found both ways: the portal records what it posted, the
/// inbound path what it imported.</item>
/// </list>
/// </summary>
public sealed class MatrixEvents(ChatDatabase database, TimeProvider time) : ITransactionalEventSink
{
    public bool Records(string eventType, EventOrigin origin) => origin.ExternalId is not null;

    public Task OnAppendedAsync(ChatTransaction transaction, IReadOnlyList<ConversationEvent> events)
    {
        // One Matrix event may append several chat events (even in several calls) within its transaction; the first
        // is what the Matrix event is (a new message, a reaction) or did (an edit, a membership change).
        if (!transaction.Items.TryGetValue(this, out var item) || item is not HashSet<string> written)
        {
            transaction.Items[this] = written = [];
        }
        foreach (var evt in events)
        {
            if (evt.Origin.ExternalId is { } eventId && written.Add(eventId))
            {
                var row = evt.Type switch
                {
                    ChatEventTypes.MessageNew => new EventRow(eventId, evt.ConversationId, evt.MessageId, evt.Seq),
                    ChatEventTypes.ReactionAdded when evt.StoredPayload is ReactionChanged reaction =>
                        new EventRow(eventId, evt.ConversationId, reaction.MessageId, null, reaction.UserId, reaction.Reaction),
                    _ => new EventRow(eventId, evt.ConversationId),
                };
                transaction.Queue(InsertSql(ignoreKnown: false), Parameters([row]));
            }
        }
        return Task.CompletedTask;
    }

    /// <summary>What a portal posted (or found it had posted), with the statements that record the actions' outcomes.</summary>
    public void RecordSent(StatementBatch batch, IReadOnlyList<EventRow> rows)
    {
        if (rows.Count > 0)
        {
            batch.Add(InsertSql(ignoreKnown: true), Parameters(rows));
        }
    }

    private static string InsertSql(bool ignoreKnown) =>
        """
        INSERT INTO matrix_events (event_id, conversation_id, message_id, message_seq, reaction_user_id, reaction, recorded_at)
        VALUES (@EventId, @ConversationId, @MessageId, @MessageSeq, @ReactionUserId, @Reaction, @now)
        """ + (ignoreKnown ? " ON CONFLICT DO NOTHING" : "");

    private List<object> Parameters(IEnumerable<EventRow> rows)
    {
        var now = time.UtcNowMicros();
        return [.. rows.Select(r => new { r.EventId, r.ConversationId, r.MessageId, r.MessageSeq, r.ReactionUserId, r.Reaction, now })];
    }

    /// <summary>Which of these events the chat holds: applied from Matrix, or posted by the bridge.</summary>
    public async Task<HashSet<string>> HeldAsync(IReadOnlyCollection<string> eventIds, CancellationToken cancellationToken)
    {
        if (eventIds.Count == 0)
        {
            return [];
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        var held = await connection.QueryAsync<string>(
            $"SELECT event_id FROM matrix_events WHERE {SqlDialect.InList(connection, "event_id", "eventIds")}", new { eventIds = eventIds.ToArray() });
        return held.ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>Whether <paramref name="connection"/>'s database already holds the change this event made.</summary>
    public static async Task<bool> AppliedAsync(DbConnection connection, string eventId) =>
        await connection.QuerySingleOrDefaultAsync<int>("SELECT 1 FROM matrix_events WHERE event_id = @eventId", new { eventId }) == 1;

    /// <summary>The failure a change makes when its event was applied by someone else in the meantime.</summary>
    public static bool IsAlreadyApplied(Exception exception) => exception switch
    {
        PostgresException pg => pg.SqlState == PostgresErrorCodes.UniqueViolation && pg.ConstraintName == "matrix_events_pkey",
        SqliteException sqlite => DbErrors.IsUniqueViolation(sqlite) && sqlite.Message.Contains("matrix_events.event_id", StringComparison.Ordinal),
        _ => exception.InnerException is { } inner && IsAlreadyApplied(inner),
    };

    /// <summary>The message a Matrix event is, in this conversation.</summary>
    public async Task<MessageEvent?> MessageAsync(Guid conversationId, string eventId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<MessageEvent>(
            """
            SELECT message_id, event_id, message_seq AS seq FROM matrix_events
             WHERE event_id = @eventId AND conversation_id = @conversationId AND message_id IS NOT NULL AND reaction IS NULL
            """,
            new { eventId, conversationId });
    }

    /// <summary>The Matrix event a message is, if it reached Matrix (or came from it).</summary>
    public async Task<string?> EventOfMessageAsync(Guid messageId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>(
            "SELECT event_id FROM matrix_events WHERE message_id = @messageId AND reaction IS NULL", new { messageId });
    }

    /// <summary>The events these messages are, by message.</summary>
    public static async Task<Dictionary<Guid, string>> EventsOfMessagesAsync(DbConnection connection, IReadOnlyCollection<Guid> messageIds, DbTransaction? transaction = null)
    {
        if (messageIds.Count == 0)
        {
            return [];
        }
        var rows = await connection.QueryAsync<(Guid MessageId, string EventId)>(
            $"SELECT message_id, event_id FROM matrix_events WHERE reaction IS NULL AND {SqlDialect.InList(connection, "message_id", "ids")}",
            new { ids = messageIds.ToArray() }, transaction);
        return rows.ToDictionary(r => r.MessageId, r => r.EventId);
    }

    /// <summary>The latest message at or before <paramref name="seq"/> that is an event in Matrix.</summary>
    public async Task<string?> LatestEventAtOrBeforeAsync(Guid conversationId, long seq, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>(
            """
            SELECT event_id FROM matrix_events
             WHERE conversation_id = @conversationId AND message_seq <= @seq AND reaction IS NULL
             ORDER BY message_seq DESC LIMIT 1
            """,
            new { conversationId, seq });
    }

    /// <summary>The reaction a Matrix event is, in this conversation.</summary>
    public async Task<ReactionEvent?> ReactionAsync(Guid conversationId, string eventId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<ReactionEvent>(
            """
            SELECT message_id, reaction_user_id AS user_id, reaction, event_id FROM matrix_events
             WHERE event_id = @eventId AND conversation_id = @conversationId AND reaction IS NOT NULL
            """,
            new { eventId, conversationId });
    }

    /// <summary>The event of the latest time this user gave this reaction to this message (added, removed, added again).</summary>
    public async Task<string?> LatestReactionEventAsync(Guid messageId, Guid userId, string reaction, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<string>(
            """
            SELECT event_id FROM matrix_events
             WHERE message_id = @messageId AND reaction_user_id = @userId AND reaction = @reaction
             ORDER BY recorded_at DESC LIMIT 1
            """,
            new { messageId, userId, reaction });
    }

    /// <summary>The condition (on <c>target_event_id</c>) that an event waiting for its target can apply now.</summary>
    public const string TargetKnown =
        "target_event_id IN (SELECT event_id FROM matrix_events WHERE message_id IS NOT NULL) " +
        "OR target_event_id IN (SELECT 'room:' || matrix_room_id FROM matrix_room_mapping WHERE matrix_room_id IS NOT NULL)";

    /// <summary>Whether a relation's target is a message or reaction we know, or a room's creation.</summary>
    public static async Task<bool> IsKnownTargetAsync(DbConnection connection, string targetEventId) =>
        await connection.QuerySingleOrDefaultAsync<int>(
            """
            SELECT 1 WHERE EXISTS (SELECT 1 FROM matrix_events WHERE event_id = @targetEventId AND message_id IS NOT NULL)
                        OR EXISTS (SELECT 1 FROM matrix_room_mapping WHERE 'room:' || matrix_room_id = @targetEventId)
            """,
            new { targetEventId }) == 1;
}

/// <summary>A row of <c>matrix_events</c>: an event, and the message or reaction it is (none for e.g. an edit).</summary>
public sealed record EventRow(
    string EventId, Guid ConversationId, Guid? MessageId = null, long? MessageSeq = null, Guid? ReactionUserId = null, string? Reaction = null);

/// <summary>A message that is a Matrix event.</summary>
public sealed class MessageEvent
{
    public Guid MessageId { get; init; }
    public string EventId { get; init; } = "";
    public long Seq { get; init; }
}

/// <summary>A reaction that is a Matrix event.</summary>
public sealed class ReactionEvent
{
    public Guid MessageId { get; init; }
    public Guid UserId { get; init; }
    public string Reaction { get; init; } = "";
    public string EventId { get; init; } = "";
}
