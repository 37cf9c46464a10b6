using System.Data.Common;
using Dapper;
using Microsoft.Data.Sqlite;
using Npgsql;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// The one rule of inbound idempotency: a Matrix event changes the chat at most once. Every change bridged from Matrix
/// writes its event id into <c>matrix_inbound_events</c> in the change's own transaction, so a redelivered event (a
/// retried or concurrent appservice transaction, a restarted homeserver numbering its transactions from 1 again, a
/// /sync batch read twice) fails on the primary key and its change rolls back with it.
/// </summary>
public sealed class MatrixInboundLedger(TimeProvider time) : ITransactionalEventSink
{
    public bool Records(string eventType, EventOrigin origin) => origin.ExternalId is not null;

    public async Task OnAppendedAsync(ChatTransaction transaction, IReadOnlyList<ConversationEvent> events)
    {
        // One Matrix event may append several chat events (even in several calls) within its transaction.
        if (!transaction.Items.TryGetValue(this, out var item) || item is not HashSet<string> written)
        {
            transaction.Items[this] = written = [];
        }
        foreach (var evt in events)
        {
            if (evt.Origin.ExternalId is { } eventId && written.Add(eventId))
            {
                await transaction.ExecuteAsync(
                    "INSERT INTO matrix_inbound_events (event_id, conversation_id, applied_at) VALUES (@eventId, @ConversationId, @now)",
                    new { eventId, evt.ConversationId, now = time.UtcNowMicros() });
            }
        }
    }

    /// <summary>Whether <paramref name="connection"/>'s database already holds the change this event made.</summary>
    public static async Task<bool> AppliedAsync(DbConnection connection, string eventId) =>
        await connection.QuerySingleOrDefaultAsync<int>("SELECT 1 FROM matrix_inbound_events WHERE event_id = @eventId", new { eventId }) == 1;

    /// <summary>The failure a change makes when its event was applied by someone else in the meantime.</summary>
    public static bool IsAlreadyApplied(Exception exception) => exception switch
    {
        PostgresException pg => pg.SqlState == PostgresErrorCodes.UniqueViolation && pg.TableName == "matrix_inbound_events",
        SqliteException sqlite => DbErrors.IsUniqueViolation(sqlite) && sqlite.Message.Contains("matrix_inbound_events.", StringComparison.Ordinal),
        _ => exception.InnerException is { } inner && IsAlreadyApplied(inner),
    };
}
