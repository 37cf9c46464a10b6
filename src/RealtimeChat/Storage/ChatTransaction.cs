using System.Data.Common;
using System.Text.Json;
using Dapper;

namespace RealtimeChat.Storage;

/// <summary>
/// A write to one conversation. Events appended here are stored in <c>conversation_events</c> with the
/// conversation's next sequence number, and handed to the publisher only after the commit succeeded:
/// this is the one place a stored chat change becomes visible to WebSocket clients (and to the bridge).
/// </summary>
public sealed class ChatTransaction : IAsyncDisposable
{
    private readonly SemaphoreSlim _gate;
    private readonly IChatEventPublisher _publisher;
    private readonly List<ConversationEvent> _events = [];

    internal ChatTransaction(DbConnection connection, DbTransaction transaction, SemaphoreSlim gate, IChatEventPublisher publisher)
    {
        Connection = connection;
        Transaction = transaction;
        _gate = gate;
        _publisher = publisher;
    }

    public DbConnection Connection { get; }

    public DbTransaction Transaction { get; }

    public Task<int> ExecuteAsync(string sql, object? parameters = null) =>
        Connection.ExecuteAsync(sql, parameters, Transaction);

    public Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? parameters = null) =>
        Connection.QuerySingleOrDefaultAsync<T>(sql, parameters, Transaction);

    public Task<IEnumerable<T>> QueryAsync<T>(string sql, object? parameters = null) =>
        Connection.QueryAsync<T>(sql, parameters, Transaction);

    /// <summary>Takes the conversation's next sequence number and records activity time.</summary>
    public Task<long> NextSequenceAsync(Guid conversationId, DateTimeOffset now, Guid? lastMessageId = null) =>
        Connection.ExecuteScalarAsync<long>(
            """
            UPDATE conversations
               SET last_seq = last_seq + 1,
                   last_activity_at = @now,
                   last_message_id = COALESCE(@lastMessageId, last_message_id)
             WHERE id = @conversationId
            RETURNING last_seq
            """,
            new { conversationId, now, lastMessageId }, Transaction);

    /// <param name="storedPayload">What the log keeps: never message content, which stays encrypted in <c>messages</c>.</param>
    /// <param name="liveData">What connected clients receive now; defaults to the stored payload.</param>
    public async Task<ConversationEvent> AppendEventAsync(
        Guid conversationId, long seq, string type, Guid? actorId, DateTimeOffset now,
        object storedPayload, object? liveData = null, Guid? messageId = null)
    {
        var payload = JsonSerializer.Serialize(storedPayload, ChatJson.Options);
        await Connection.ExecuteAsync(
            """
            INSERT INTO conversation_events (conversation_id, seq, type, actor_id, message_id, payload, created_at)
            VALUES (@conversationId, @seq, @type, @actorId, @messageId, @payload, @now)
            """,
            new { conversationId, seq, type, actorId, messageId, payload, now }, Transaction);
        var evt = new ConversationEvent(conversationId, seq, type, actorId, now, liveData ?? storedPayload);
        _events.Add(evt);
        return evt;
    }

    public async Task CommitAsync(CancellationToken cancellationToken = default)
    {
        await Transaction.CommitAsync(cancellationToken);
        // Still holding the conversation's write gate, so events leave in sequence order.
        foreach (var evt in _events)
        {
            _publisher.Publish(evt);
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            // Disposing an uncommitted transaction rolls it back, and does not throw on a broken connection.
            await Transaction.DisposeAsync();
            await Connection.DisposeAsync();
        }
        finally
        {
            _gate.Release();
        }
    }
}

/// <summary>A stored chat change as clients see it: the conversation, its sequence number and the change.</summary>
public sealed record ConversationEvent(
    Guid ConversationId, long Seq, string Type, Guid? ActorId, DateTimeOffset CreatedAt, object Data);

public interface IChatEventPublisher
{
    /// <summary>Called after commit, in sequence order per conversation. Must not block.</summary>
    void Publish(ConversationEvent evt);
}
