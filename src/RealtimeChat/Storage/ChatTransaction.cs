using System.Data.Common;
using System.Text.Json;
using Dapper;
using Npgsql;
using Prometheus;

namespace RealtimeChat.Storage;

/// <summary>
/// A write to one conversation. Events appended here are stored in <c>conversation_events</c> with the
/// conversation's next sequence number, shown to transactional sinks (the Matrix outbox) before commit and
/// handed to the publishers (WebSocket fan-out) only after the commit succeeded:
/// this is the one place a stored chat change becomes visible to WebSocket clients (and to the bridge).
/// </summary>
public sealed class ChatTransaction : IAsyncDisposable
{
    private readonly SemaphoreSlim[] _gates;
    private readonly ChatEventPipeline _pipeline;
    private readonly List<ConversationEvent> _events = [];
    private readonly StatementBatch _queued;

    internal ChatTransaction(DbConnection connection, DbTransaction transaction, SemaphoreSlim[] gates, ChatEventPipeline pipeline, EventOrigin origin)
    {
        Connection = connection;
        Transaction = transaction;
        _gates = gates;
        _pipeline = pipeline;
        Origin = origin;
        _queued = new StatementBatch(connection, transaction);
    }

    /// <summary>Where the change came from; the bridge does not send Matrix's own changes back to Matrix.</summary>
    public EventOrigin Origin { get; }

    /// <summary>What sinks remember for the lifetime of this transaction (e.g. what they already wrote in it).</summary>
    public IDictionary<object, object?> Items { get; } = new Dictionary<object, object?>();

    public DbConnection Connection { get; }

    /// <summary>
    /// Multi-row writes differ by dialect: PostgreSQL takes a whole batch in one statement over arrays
    /// (<c>unnest</c>), one round trip; SQLite runs in-process, where a prepared statement per row costs as little.
    /// </summary>
    public bool IsPostgres => Connection is NpgsqlConnection;

    public DbTransaction Transaction { get; }

    public async Task<int> ExecuteAsync(string sql, object? parameters = null)
    {
        await FlushAsync();
        return await Connection.ExecuteAsync(sql, parameters, Transaction);
    }

    public async Task<T?> QuerySingleOrDefaultAsync<T>(string sql, object? parameters = null)
    {
        await FlushAsync();
        return await Connection.QuerySingleOrDefaultAsync<T>(sql, parameters, Transaction);
    }

    /// <summary>
    /// A write nothing reads before the next events are appended: it goes to the database with them, the events' own
    /// row and what the sinks write for them, as one batch (<see cref="StatementBatch"/>), in the order queued. For the
    /// rows a change writes beside its events (a new message) and for sinks. Reads through <see cref="Connection"/> do
    /// not see it until <see cref="AppendEventsAsync"/> (or a statement through this class, or the commit) sent it.
    /// </summary>
    public void Queue(string sql, object? parameters = null) => _queued.Add(sql, parameters);

    private async Task FlushAsync()
    {
        if (!_queued.IsEmpty)
        {
            await _queued.ExecuteAsync();
        }
    }

    /// <summary>Takes the conversation's next sequence number and records activity time.</summary>
    public async Task<long> NextSequenceAsync(Guid conversationId, DateTimeOffset now, Guid? lastMessageId = null)
    {
        await FlushAsync();
        return await Connection.ExecuteScalarAsync<long>(
            """
            UPDATE conversations
               SET last_seq = last_seq + 1,
                   last_activity_at = @now,
                   last_message_id = COALESCE(@lastMessageId, last_message_id)
             WHERE id = @conversationId
            RETURNING last_seq
            """,
            new { conversationId, now, lastMessageId }, Transaction);
    }

    /// <summary>
    /// Takes each conversation's Count sequence numbers at once (group commit) and records the activity; returns each
    /// conversation's new last seq (the batch's numbers end there).
    /// </summary>
    public async Task<Dictionary<Guid, long>> ReserveSequencesAsync(
        IReadOnlyList<(Guid ConversationId, int Count, Guid LastMessageId)> reservations, DateTimeOffset now)
    {
        await FlushAsync();
        if (IsPostgres)
        {
            var rows = await Connection.QueryAsync<(Guid Id, long LastSeq)>(
                """
                UPDATE conversations c
                   SET last_seq = c.last_seq + r.count,
                       last_activity_at = @now,
                       last_message_id = r.last_message_id
                  FROM unnest(@conversationIds, @counts, @lastMessageIds) AS r(conversation_id, count, last_message_id)
                 WHERE c.id = r.conversation_id
                RETURNING c.id, c.last_seq
                """,
                new
                {
                    conversationIds = reservations.Select(r => r.ConversationId).ToArray(),
                    counts = reservations.Select(r => r.Count).ToArray(),
                    lastMessageIds = reservations.Select(r => r.LastMessageId).ToArray(),
                    now,
                },
                Transaction);
            return rows.ToDictionary(r => r.Id, r => r.LastSeq);
        }

        var lastSeqs = new Dictionary<Guid, long>(reservations.Count);
        foreach (var (conversationId, count, lastMessageId) in reservations)
        {
            lastSeqs[conversationId] = await Connection.ExecuteScalarAsync<long>(
                """
                UPDATE conversations
                   SET last_seq = last_seq + @count, last_activity_at = @now, last_message_id = @lastMessageId
                 WHERE id = @conversationId
                RETURNING last_seq
                """,
                new { conversationId, count, now, lastMessageId }, Transaction);
        }
        return lastSeqs;
    }

    /// <param name="storedPayload">What the log keeps: never message content, which stays encrypted in <c>messages</c>.</param>
    /// <param name="liveData">What connected clients receive now; defaults to the stored payload.</param>
    public async Task<ConversationEvent> AppendEventAsync(
        Guid conversationId, long seq, string type, Guid? actorId, DateTimeOffset now,
        object storedPayload, object? liveData = null, Guid? messageId = null)
    {
        var evt = new ConversationEvent(conversationId, seq, type, actorId, now, liveData ?? storedPayload, messageId, storedPayload, Origin);
        await AppendEventsAsync([evt]);
        return evt;
    }

    /// <summary>
    /// Stores events (each with its seq already taken) in the log, shows them to the sinks, and queues them for
    /// publication. What was queued before, the events and what the sinks queue go to the database together.
    /// </summary>
    public async Task AppendEventsAsync(IReadOnlyList<ConversationEvent> events)
    {
        const string insert =
            """
            INSERT INTO conversation_events (conversation_id, seq, type, actor_id, message_id, payload, created_at)
            """;
        if (IsPostgres)
        {
            Queue(
                insert + " SELECT * FROM unnest(@conversationIds, @seqs, @types, @actorIds, @messageIds, @payloads, @createdAts)",
                new
                {
                    conversationIds = events.Select(e => e.ConversationId).ToArray(),
                    seqs = events.Select(e => e.Seq).ToArray(),
                    types = events.Select(e => e.Type).ToArray(),
                    actorIds = events.Select(e => e.ActorId).ToArray(),
                    messageIds = events.Select(e => e.MessageId).ToArray(),
                    payloads = events.Select(e => e.StoredJson).ToArray(),
                    createdAts = events.Select(e => e.CreatedAt.ToUniversalTime()).ToArray(),
                });
        }
        else
        {
            Queue(
                insert + " VALUES (@ConversationId, @Seq, @Type, @ActorId, @MessageId, @Payload, @CreatedAt)",
                events.Select(e => new { e.ConversationId, e.Seq, e.Type, e.ActorId, e.MessageId, Payload = e.StoredJson, e.CreatedAt }).ToList());
        }
        await _pipeline.OnAppendedAsync(this, events);
        await FlushAsync();
        _events.AddRange(events);
    }

    public async Task CommitAsync(CancellationToken cancellationToken = default)
    {
        await FlushAsync();
        using (ChatMetrics.CommitDuration.NewTimer())
        {
            await Transaction.CommitAsync(cancellationToken);
        }
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
            foreach (var gate in _gates)
            {
                gate.Release();
            }
        }
    }
}

/// <summary>A stored chat change: the conversation, its sequence number, what clients see and what the log keeps.</summary>
public sealed record ConversationEvent(
    Guid ConversationId, long Seq, string Type, Guid? ActorId, DateTimeOffset CreatedAt, object Data,
    Guid? MessageId = null, object? StoredPayload = null, EventOrigin Origin = default)
{
    /// <summary>The stored payload as JSON, serialised once for the log and every sink that keeps it.</summary>
    public string StoredJson { get; } = JsonSerializer.Serialize(StoredPayload ?? Data, ChatJson.Options);
}

/// <summary>
/// Where a change came from: the app, or a bridge mirroring an event of another network. A bridged change names the
/// external event it mirrors, so the bridge can record that event in the change's own transaction (a unique key) and
/// the same event can never be applied twice, whatever retries or races deliver it again.
/// </summary>
public readonly record struct EventOrigin
{
    private EventOrigin(bool bridged, string? externalId) => (IsBridged, ExternalId) = (bridged, externalId);

    /// <summary>Made in the app (the default).</summary>
    public static EventOrigin App => default;

    public bool IsBridged { get; }

    public bool IsApp => !IsBridged;

    /// <summary>The external event this change mirrors, when there is exactly one (not for e.g. a read receipt).</summary>
    public string? ExternalId { get; }

    public static EventOrigin Bridged(string? externalId = null) => new(true, externalId);
}

/// <summary>Sees each event after its commit, in sequence order per conversation (e.g. WebSocket fan-out). Must not block.</summary>
public interface IChatEventPublisher
{
    void Publish(ConversationEvent evt);
}

/// <summary>Sees each event inside its transaction, so what it writes commits or rolls back with the change (e.g. an outbox).</summary>
public interface ITransactionalEventSink
{
    /// <summary>Whether an event of this type and origin gets a row of this sink (known before the event is stored).</summary>
    bool Records(string eventType, EventOrigin origin);

    Task OnAppendedAsync(ChatTransaction transaction, IReadOnlyList<ConversationEvent> events);
}

/// <summary>Every consumer of stored chat changes, in one place.</summary>
public sealed class ChatEventPipeline(IEnumerable<ITransactionalEventSink> sinks, IEnumerable<IChatEventPublisher> publishers)
{
    private readonly ITransactionalEventSink[] _sinks = [.. sinks];
    private readonly IChatEventPublisher[] _publishers = [.. publishers];

    /// <summary>Whether a change of this type and origin is recorded for a sink (e.g. will be mirrored to Matrix).</summary>
    public bool Records(string eventType, EventOrigin origin) => _sinks.Any(sink => sink.Records(eventType, origin));

    internal async Task OnAppendedAsync(ChatTransaction transaction, IReadOnlyList<ConversationEvent> events)
    {
        foreach (var sink in _sinks)
        {
            await sink.OnAppendedAsync(transaction, events);
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
