using System.Diagnostics;
using System.Net.WebSockets;

namespace RealtimeChat.Realtime;

/// <summary>
/// One WebSocket of one user. Frames go through a bounded queue drained on the thread pool by at most one writer at a
/// time; a client that falls a whole queue behind is disconnected rather than buffered without bound.
/// </summary>
/// <remarks>
/// At 10,000 connections what each one holds matters, so an idle connection holds no writer task, no cancellation
/// sources and no buffers: the queue is a small array grown on demand, and a writer is queued only when a frame
/// arrives at an empty queue. When frames pile up, the writer hands them to the socket in one write.
/// </remarks>
public sealed class ChatConnection : IThreadPoolWorkItem
{
    // Queues that grew past this during a burst are dropped once drained instead of kept for the connection's life.
    private const int KeptQueueCapacity = 16;

    private readonly Lock _lock = new();
    private readonly int _queueLimit;
    private readonly FrameBatchingStream? _batching;
    private readonly HashSet<Guid> _conversations = [];
    // Per conversation: the first seq delivered live on this connection (everything from it on was sent in order).
    private Dictionary<Guid, long>? _firstLiveSeq;
    // Per conversation being resumed: live frames held back until the replay from the database is queued.
    private Dictionary<Guid, List<OutboundFrame>>? _resuming;
    private OutboundFrame[] _queue = [];
    private int _head;
    private int _count;
    private bool _writing;
    private bool _closed;
    private TaskCompletionSource? _writerStopped;

    internal ChatConnection(Guid userId, WebSocket socket, int queueLimit, FrameBatchingStream? batching = null)
    {
        UserId = userId;
        Socket = socket;
        _queueLimit = queueLimit;
        _batching = batching;
    }

    public Guid Id { get; } = Guid.NewGuid();

    public Guid UserId { get; }

    public WebSocket Socket { get; }

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
            _firstLiveSeq?.Remove(conversationId);
        }
    }

    /// <summary>Queues a live frame; false if the connection is gone or was just dropped as a slow consumer.</summary>
    public bool Send(OutboundFrame frame)
    {
        bool queued;
        bool startWriter;
        lock (_lock)
        {
            if (frame.ConversationId is { } conversationId)
            {
                if (_resuming is not null && _resuming.TryGetValue(conversationId, out var held))
                {
                    held.Add(frame);
                    return true;
                }
                (_firstLiveSeq ??= []).TryAdd(conversationId, frame.Seq);
            }
            queued = QueueLocked(frame);
            startWriter = StartWriterLocked();
        }
        if (startWriter)
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
        if (!queued)
        {
            AbortSocketIfSlow();
        }
        return queued;
    }

    /// <summary>Holds live frames of a conversation back while its missed events are read from the database.</summary>
    internal bool BeginResume(Guid conversationId)
    {
        lock (_lock)
        {
            if (!_conversations.Contains(conversationId) || (_resuming?.ContainsKey(conversationId) ?? false))
            {
                return false;
            }
            (_resuming ??= [])[conversationId] = [];
            return true;
        }
    }

    /// <summary>
    /// Queues the replayed frames the client has not had (those before its first live frame), then the held-back
    /// live frames that are newer than the replay, in sequence order, and goes live again.
    /// </summary>
    internal int CompleteResume(Guid conversationId, long afterSeq, IReadOnlyList<OutboundFrame> replay, OutboundFrame? notice)
    {
        int sent;
        bool startWriter;
        lock (_lock)
        {
            List<OutboundFrame>? held = null;
            if (_resuming is not null && _resuming.Remove(conversationId, out held) && _resuming.Count == 0)
            {
                _resuming = null;
            }
            _firstLiveSeq ??= [];
            var firstLive = _firstLiveSeq.GetValueOrDefault(conversationId, long.MaxValue);
            sent = 0;
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
            foreach (var frame in held ?? [])
            {
                if (frame.Seq > last)
                {
                    QueueLocked(frame);
                }
            }
            _firstLiveSeq[conversationId] = afterSeq + 1;
            startWriter = StartWriterLocked();
        }
        if (startWriter)
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
        AbortSocketIfSlow();
        return sent;
    }

    /// <summary>Stops queuing frames; what is still queued is dropped. The first reason given is the one kept.</summary>
    public void Close(string reason)
    {
        lock (_lock)
        {
            CloseLocked(reason);
        }
    }

    /// <summary>Completes once no writer is running; a closed connection starts none again.</summary>
    public Task WriterStoppedAsync()
    {
        lock (_lock)
        {
            if (!_writing)
            {
                return Task.CompletedTask;
            }
            _writerStopped ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _writerStopped.Task;
        }
    }

    void IThreadPoolWorkItem.Execute() => _ = WriteQueuedAsync();

    private async Task WriteQueuedAsync()
    {
        try
        {
            while (TryTakeNext(out var frame, out var more))
            {
                _batching?.Hold(more);
                await Socket.SendAsync(frame.Payload, WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None);
                if (frame.PublishedAt != 0)
                {
                    ChatMetrics.FanoutLatency.Observe(Stopwatch.GetElapsedTime(frame.PublishedAt).TotalSeconds);
                }
            }
        }
        catch (Exception)
        {
            // Nobody awaits this writer: whatever stopped it, the connection is over and must not look busy forever.
            _batching?.Hold(false);
            lock (_lock)
            {
                CloseLocked("send_failed");
                StopWriterLocked();
            }
            // The reader is waiting on the same broken socket: end it too.
            Socket.Abort();
        }
    }

    private bool TryTakeNext(out OutboundFrame frame, out bool more)
    {
        lock (_lock)
        {
            if (_count == 0 || _closed)
            {
                _batching?.Hold(false);
                StopWriterLocked();
                frame = null!;
                more = false;
                return false;
            }
            frame = _queue[_head];
            _queue[_head] = null!;
            _head = (_head + 1) % _queue.Length;
            _count--;
            more = _count > 0;
            if (_count == 0)
            {
                _head = 0;
                if (_queue.Length > KeptQueueCapacity)
                {
                    _queue = [];
                }
            }
            return true;
        }
    }

    private bool StartWriterLocked()
    {
        if (_writing || _closed || _count == 0)
        {
            return false;
        }
        _writing = true;
        return true;
    }

    private void StopWriterLocked()
    {
        _writing = false;
        _writerStopped?.TrySetResult();
        _writerStopped = null;
    }

    private bool QueueLocked(OutboundFrame frame)
    {
        if (_closed)
        {
            return false;
        }
        if (_count == _queueLimit)
        {
            CloseLocked("slow_consumer");
            return false;
        }
        if (_count == _queue.Length)
        {
            var larger = new OutboundFrame[Math.Min(Math.Max(4, _queue.Length * 2), _queueLimit)];
            for (var i = 0; i < _count; i++)
            {
                larger[i] = _queue[(_head + i) % _queue.Length];
            }
            _queue = larger;
            _head = 0;
        }
        _queue[(_head + _count) % _queue.Length] = frame;
        _count++;
        return true;
    }

    private void CloseLocked(string reason)
    {
        CloseReason ??= reason;
        if (_closed)
        {
            return;
        }
        _closed = true;
        _queue = [];
        _head = 0;
        _count = 0;
    }

    // A slow consumer's reader is still waiting for client frames: abort the socket so the session ends and detaches.
    private void AbortSocketIfSlow()
    {
        if (CloseReason == "slow_consumer")
        {
            Socket.Abort();
        }
    }
}
