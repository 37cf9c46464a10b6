using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Dapper;
using RealtimeChat.Storage;

namespace RealtimeChat.Realtime;

/// <summary>
/// Fans stored chat events out to the connected members of each conversation. Membership is tracked in memory
/// from the events themselves, so publishing never waits on the database.
/// </summary>
public sealed class RealtimeHub(ChatDatabase database, IEnumerable<ITypingObserver> typingObservers, ILogger<RealtimeHub> logger) : IChatEventPublisher
{
    private readonly ITypingObserver[] _typingObservers = [.. typingObservers];

    private readonly ConcurrentDictionary<Guid, UserConnections> _users = new();
    private readonly ConcurrentDictionary<Guid, Subscribers> _conversations = new();
    // Sockets per user, counted from before the upgrade is accepted until the session ends.
    private readonly Dictionary<Guid, int> _sockets = [];
    // Guards every change to who is subscribed where (connects, disconnects, membership events); publishing
    // only reads lock-free snapshots.
    private readonly Lock _gate = new();

    public bool IsConnected(Guid userId) => _users.ContainsKey(userId);

    public void Publish(ConversationEvent evt)
    {
        var frame = new OutboundFrame(
            evt.ConversationId,
            evt.Seq,
            JsonSerializer.SerializeToUtf8Bytes(new EventFrame(evt.Type, evt.ConversationId, evt.Seq, evt.ActorId, evt.CreatedAt, evt.Data), ChatJson.Options),
            Stopwatch.GetTimestamp());

        switch (evt.Data)
        {
            case ConversationCreated created:
                foreach (var member in created.Members)
                {
                    SubscribeUser(member.UserId, evt.ConversationId);
                }
                break;
            case MemberAdded added:
                SubscribeUser(added.Member.UserId, evt.ConversationId);
                break;
        }

        if (_conversations.TryGetValue(evt.ConversationId, out var subscribers))
        {
            foreach (var connection in subscribers.Snapshot())
            {
                connection.Send(frame);
            }
        }

        if (evt.Data is MemberRemoved removed)
        {
            UnsubscribeUser(removed.UserId, evt.ConversationId);
        }
    }

    /// <summary>Relays a typing notice to the conversation's other members (and its observers, e.g. the bridge); never stored.</summary>
    public void Typing(Guid userId, Guid conversationId, EventOrigin origin = default)
    {
        foreach (var observer in _typingObservers)
        {
            observer.Typing(userId, conversationId, origin);
        }
        if (!_conversations.TryGetValue(conversationId, out var subscribers))
        {
            return;
        }
        var frame = OutboundFrame.Control(new TypingFrame(conversationId, userId));
        foreach (var connection in subscribers.Snapshot())
        {
            if (connection.UserId != userId)
            {
                connection.Send(frame);
            }
        }
    }

    /// <summary>Takes one of the user's socket slots; false when all <paramref name="max"/> are in use.</summary>
    public bool TryReserveSocket(Guid userId, int max)
    {
        lock (_sockets)
        {
            var open = _sockets.GetValueOrDefault(userId);
            if (open >= max)
            {
                return false;
            }
            _sockets[userId] = open + 1;
            return true;
        }
    }

    public void ReleaseSocket(Guid userId)
    {
        lock (_sockets)
        {
            if (_sockets.TryGetValue(userId, out var open) && open > 1)
            {
                _sockets[userId] = open - 1;
            }
            else
            {
                _sockets.Remove(userId);
            }
        }
    }

    /// <summary>Registers a connection and subscribes it to every conversation its user is in.</summary>
    public async Task AttachAsync(ChatConnection connection, CancellationToken cancellationToken)
    {
        long version;
        lock (_gate)
        {
            var user = _users.GetOrAdd(connection.UserId, _ => new UserConnections());
            user.Connections.Add(connection);
            // Only membership changes move the version: another socket of the same user attaching or leaving meanwhile
            // does not make this load stale, and counting those made a burst of one user's connects reload each other.
            version = user.Version;
        }
        ChatMetrics.WebSocketConnections.Inc();
        while (true)
        {
            await using var db = await database.OpenAsync(cancellationToken);
            var conversationIds = (await db.QueryAsync<Guid>(
                "SELECT conversation_id FROM conversation_members WHERE user_id = @userId", new { userId = connection.UserId })).AsList();
            lock (_gate)
            {
                // A membership change that raced with the load bumped the version: load again rather than miss it.
                var user = _users[connection.UserId];
                if (user.Version == version)
                {
                    connection.SetSubscriptions(conversationIds);
                    foreach (var conversationId in conversationIds)
                    {
                        _conversations.GetOrAdd(conversationId, _ => new Subscribers()).Add(connection);
                    }
                    return;
                }
                version = user.Version;
            }
        }
    }

    public void Detach(ChatConnection connection)
    {
        lock (_gate)
        {
            if (_users.TryGetValue(connection.UserId, out var user))
            {
                user.Connections.Remove(connection);
                if (user.Connections.Count == 0)
                {
                    _users.TryRemove(connection.UserId, out _);
                }
            }
            foreach (var conversationId in connection.Subscriptions())
            {
                RemoveSubscriber(conversationId, connection);
            }
        }
        ChatMetrics.WebSocketConnections.Dec();
        ChatMetrics.WebSocketDisconnects.WithLabels(connection.CloseReason ?? "closed").Inc();
        logger.LogDebug("WebSocket {ConnectionId} of {UserId} closed: {Reason}", connection.Id, connection.UserId, connection.CloseReason ?? "closed");
    }

    private void SubscribeUser(Guid userId, Guid conversationId)
    {
        lock (_gate)
        {
            if (!_users.TryGetValue(userId, out var user))
            {
                return;
            }
            user.Version++;
            foreach (var connection in user.Connections)
            {
                connection.Subscribe(conversationId);
                _conversations.GetOrAdd(conversationId, _ => new Subscribers()).Add(connection);
            }
        }
    }

    private void UnsubscribeUser(Guid userId, Guid conversationId)
    {
        lock (_gate)
        {
            if (!_users.TryGetValue(userId, out var user))
            {
                return;
            }
            user.Version++;
            foreach (var connection in user.Connections)
            {
                connection.Unsubscribe(conversationId);
                RemoveSubscriber(conversationId, connection);
            }
        }
    }

    private void RemoveSubscriber(Guid conversationId, ChatConnection connection)
    {
        if (_conversations.TryGetValue(conversationId, out var subscribers) && subscribers.Remove(connection) && subscribers.IsEmpty)
        {
            _conversations.TryRemove(conversationId, out _);
        }
    }

    private sealed class UserConnections
    {
        public readonly List<ChatConnection> Connections = [];
        public long Version;
    }

    /// <summary>Copy-on-write array, changed only under the hub's gate: fan-out iterates a snapshot without locking.</summary>
    private sealed class Subscribers
    {
        private ChatConnection[] _connections = [];

        public bool IsEmpty => _connections.Length == 0;

        public ChatConnection[] Snapshot() => Volatile.Read(ref _connections);

        public void Add(ChatConnection connection)
        {
            if (!_connections.Contains(connection))
            {
                Volatile.Write(ref _connections, [.. _connections, connection]);
            }
        }

        public bool Remove(ChatConnection connection)
        {
            var remaining = _connections.Where(c => c != connection).ToArray();
            var removed = remaining.Length != _connections.Length;
            Volatile.Write(ref _connections, remaining);
            return removed;
        }
    }
}

/// <summary>Sees typing notices as they are relayed (they are not stored, so no sink sees them). Must not block.</summary>
public interface ITypingObserver
{
    void Typing(Guid userId, Guid conversationId, EventOrigin origin);
}
