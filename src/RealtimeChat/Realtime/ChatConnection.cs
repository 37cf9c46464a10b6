using System.Diagnostics;
using System.Net.WebSockets;
using System.Threading.Channels;

namespace RealtimeChat.Realtime;

/// <summary>
/// One WebSocket of one user. Frames go through a bounded queue drained by a single writer; a client that falls
/// a whole queue behind is disconnected rather than buffered without bound.
/// </summary>
public sealed class ChatConnection
{
    private readonly Lock _lock = new();
    private readonly Channel<OutboundFrame> _outbound;
    private readonly HashSet<Guid> _conversations = [];
    // Per conversation: the first seq delivered live on this connection (everything from it on was sent in order).
    private readonly Dictionary<Guid, long> _firstLiveSeq = [];
    // Per conversation being resumed: live frames held back until the replay from the database is queued.
    private readonly Dictionary<Guid, List<OutboundFrame>> _resuming = [];
    private readonly CancellationTokenSource _closed = new();

    public ChatConnection(Guid userId, WebSocket socket, int queueLimit)
    {
        UserId = userId;
        Socket = socket;
        _outbound = Channel.CreateBounded<OutboundFrame>(new BoundedChannelOptions(queueLimit)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public Guid Id { get; } = Guid.NewGuid();

    public Guid UserId { get; }

    public WebSocket Socket { get; }

    public CancellationToken Closed => _closed.Token;

    public string? CloseReason { get; private set; }

    public bool IsSubscribed(Guid conversationId)
    {
        lock (_lock)
        {
            return _conversations.Contains(conversationId);
        }
    }

    internal Guid[] Subscriptions()
    {
        lock (_lock)
        {
            return [.. _conversations];
        }
    }

    internal void SetSubscriptions(IEnumerable<Guid> conversationIds)
    {
        lock (_lock)
        {
            _conversations.Clear();
            _conversations.UnionWith(conversationIds);
        }
    }

    internal void Subscribe(Guid conversationId)
    {
        lock (_lock)
        {
            _conversations.Add(conversationId);
        }
    }

    internal void Unsubscribe(Guid conversationId)
    {
        lock (_lock)
        {
            _conversations.Remove(conversationId);
            _firstLiveSeq.Remove(conversationId);
        }
    }

    /// <summary>Queues a live frame; false if the connection is gone or was just dropped as a slow consumer.</summary>
    public bool Send(OutboundFrame frame)
    {
        lock (_lock)
        {
            if (frame.ConversationId is { } conversationId)
            {
                if (_resuming.TryGetValue(conversationId, out var held))
                {
                    held.Add(frame);
                    return true;
                }
                _firstLiveSeq.TryAdd(conversationId, frame.Seq);
            }
            return QueueLocked(frame);
        }
    }

    /// <summary>Holds live frames of a conversation back while its missed events are read from the database.</summary>
    internal bool BeginResume(Guid conversationId)
    {
        lock (_lock)
        {
            if (!_conversations.Contains(conversationId) || _resuming.ContainsKey(conversationId))
            {
                return false;
            }
            _resuming[conversationId] = [];
            return true;
        }
    }

    /// <summary>
    /// Queues the replayed frames the client has not had (those before its first live frame), then the held-back
    /// live frames that are newer than the replay, in sequence order, and goes live again.
    /// </summary>
    internal int CompleteResume(Guid conversationId, long afterSeq, IReadOnlyList<OutboundFrame> replay, OutboundFrame? notice)
    {
        lock (_lock)
        {
            var held = _resuming.Remove(conversationId, out var frames) ? frames : [];
            var firstLive = _firstLiveSeq.GetValueOrDefault(conversationId, long.MaxValue);
            var sent = 0;
            var last = afterSeq;
            foreach (var frame in replay)
            {
                if (frame.Seq > afterSeq && frame.Seq < firstLive && QueueLocked(frame))
                {
                    sent++;
                }
                last = Math.Max(last, frame.Seq);
            }
            if (notice is not null)
            {
                QueueLocked(notice);
            }
            foreach (var frame in held.Where(f => f.Seq > last))
            {
                QueueLocked(frame);
            }
            _firstLiveSeq[conversationId] = afterSeq + 1;
            return sent;
        }
    }

    public async Task RunWriterAsync(CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closed.Token);
        try
        {
            await foreach (var frame in _outbound.Reader.ReadAllAsync(linked.Token))
            {
                await Socket.SendAsync(frame.Payload, WebSocketMessageType.Text, endOfMessage: true, linked.Token);
                if (frame.PublishedAt != 0)
                {
                    ChatMetrics.FanoutLatency.Observe(Stopwatch.GetElapsedTime(frame.PublishedAt).TotalSeconds);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or ObjectDisposedException)
        {
            Abort(CloseReason ?? "send_failed");
        }
    }

    public void Abort(string reason)
    {
        lock (_lock)
        {
            CloseReason ??= reason;
        }
        _outbound.Writer.TryComplete();
        _closed.Cancel();
    }

    private bool QueueLocked(OutboundFrame frame)
    {
        if (_outbound.Writer.TryWrite(frame))
        {
            return true;
        }
        if (!_closed.IsCancellationRequested)
        {
            CloseReason ??= "slow_consumer";
            _outbound.Writer.TryComplete();
            _closed.Cancel();
        }
        return false;
    }
}
