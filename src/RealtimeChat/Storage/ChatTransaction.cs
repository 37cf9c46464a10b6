using System.Data.Common;
using System.Text.Json;
using Dapper;

namespace RealtimeChat.Storage;

/// <summary>
/// A write to one conversation. Events appended here are stored in <c>conversation_events</c> with the
/// conversation's next sequence number, shown to transactional sinks (the Matrix outbox) before commit and
/// handed to the publishers (WebSocket fan-out) only after the commit succeeded:
/// this is the one place a stored chat change becomes visible to WebSocket clients (and to the bridge).
/// </summary>
public sealed class ChatTransaction : IAsyncDisposable
{
    private readonly SemaphoreSlim _gate;
    private readonly ChatEventPipeline _pipeline;
    private readonly List<ConversationEvent> _events = [];

    internal ChatTransaction(DbConnection connection, DbTransaction transaction, SemaphoreSlim gate, ChatEventPipeline pipeline, EventOrigin origin)
    {
        Connection = connection;
        Transaction = transaction;
        _gate = gate;
        _pipeline = pipeline;
        Origin = origin;
    }

    /// <summary>Where the change came from; the bridge does not send Matrix's own changes back to Matrix.</summary>
    public EventOrigin Origin { get; }

    public DbConnection Connection { get; }

    public DbTransaction Transaction { get; }

    public Task<int> ExecuteAsync(string sql, object? parameters = null) =>
        Connection.ExecuteAsync(sql, parameters, Transaction);

    public Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? parameters = null) =>
        Connection.QuerySingleOrDefaultAsync<T>(sql, parameters, Transaction);

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
        var evt = new ConversationEvent(conversationId, seq, type, actorId, now, liveData ?? storedPayload, messageId, storedPayload);
        await _pipeline.OnAppendedAsync(this, evt);
        _events.Add(evt);
        return evt;
    }

    public async Task CommitAsync(CancellationToken cancellationToken = default)
    {
        await Transaction.CommitAsync(cancellationToken);
        // Still holding the conversation's write gate, so events leave in sequence order.
        _pipeline.Publish(_events);
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

/// <summary>A stored chat change: the conversation, its sequence number, what clients see and what the log keeps.</summary>
public sealed record ConversationEvent(
    Guid ConversationId, long Seq, string Type, Guid? ActorId, DateTimeOffset CreatedAt, object Data,
    Guid? MessageId = null, object? StoredPayload = null);

public enum EventOrigin
{
    App,
    Matrix,
}

/// <summary>Sees each event after its commit, in sequence order per conversation (e.g. WebSocket fan-out). Must not block.</summary>
public interface IChatEventPublisher
{
    void Publish(ConversationEvent evt);
}

/// <summary>Sees each event inside its transaction, so what it writes commits or rolls back with the change (e.g. an outbox).</summary>
public interface ITransactionalEventSink
{
    Task OnAppendedAsync(ChatTransaction transaction, ConversationEvent evt);
}

/// <summary>Every consumer of stored chat changes, in one place.</summary>
public sealed class ChatEventPipeline(IEnumerable<ITransactionalEventSink> sinks, IEnumerable<IChatEventPublisher> publishers)
{
    private readonly ITransactionalEventSink[] _sinks = [.. sinks];
    private readonly IChatEventPublisher[] _publishers = [.. publishers];

    internal async Task OnAppendedAsync(ChatTransaction transaction, ConversationEvent evt)
    {
        foreach (var sink in _sinks)
        {
            await sink.OnAppendedAsync(transaction, evt);
        }
    }

    internal void Publish(IReadOnlyList<ConversationEvent> events)
    {
        foreach (var evt in events)
        {
            foreach (var publisher in _publishers)
            {
                publisher.Publish(evt);
            }
        }
    }
}
