using System.Net.WebSockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using RealtimeChat.Realtime;

namespace RealtimeChat.Tests.Realtime;

/// <summary>A connection's writer against an in-memory transport whose first write stalls, as a busy socket would.</summary>
public sealed class BatchedWriteTests
{
    [Fact]
    public async Task A_backlog_leaves_in_few_socket_writes_and_in_order()
    {
        var transport = new StallingTransport();
        var (connection, _) = Connect(transport, queueLimit: 1000);
        var conversation = Guid.NewGuid();

        connection.Send(Frame(conversation, 1));
        await transport.FirstWriteStarted.Task.WaitAsync(TimeSpan.FromSeconds(5));
        for (var seq = 2; seq <= 200; seq++)
        {
            Assert.True(connection.Send(Frame(conversation, seq)));
        }
        transport.Release();
        await WaitUntilAsync(() => transport.Messages().Count == 200);

        Assert.Equal(Enumerable.Range(1, 200).Select(seq => $"{{\"seq\":{seq}}}"), transport.Messages());
        // 199 queued frames of ~11 bytes: one write for the stalled frame, then the backlog together.
        Assert.InRange(transport.Writes, 2, 3);
    }

    [Fact]
    public async Task A_large_backlog_is_split_into_bounded_writes()
    {
        var transport = new StallingTransport();
        var (connection, _) = Connect(transport, queueLimit: 1000);
        var conversation = Guid.NewGuid();
        var padding = new string('x', 1000);

        connection.Send(Frame(conversation, 1, padding));
        await transport.FirstWriteStarted.Task.WaitAsync(TimeSpan.FromSeconds(5));
        for (var seq = 2; seq <= 100; seq++)
        {
            connection.Send(Frame(conversation, seq, padding));
        }
        transport.Release();
        await WaitUntilAsync(() => transport.Messages().Count == 100);

        Assert.Equal(Enumerable.Range(1, 100).Select(seq => (long)seq), transport.Messages().Select(m => long.Parse(m[7..m.IndexOf(',')])));
        Assert.InRange(transport.Writes, 4, 10);
        Assert.True(transport.LargestWrite <= 32 * 1024 + 1100, $"largest write {transport.LargestWrite} bytes");
    }

    [Fact]
    public async Task A_full_queue_drops_the_connection_as_a_slow_consumer()
    {
        var transport = new StallingTransport();
        var (connection, socket) = Connect(transport, queueLimit: 8);
        var conversation = Guid.NewGuid();

        connection.Send(Frame(conversation, 1));
        await transport.FirstWriteStarted.Task.WaitAsync(TimeSpan.FromSeconds(5));
        for (var seq = 2; seq <= 9; seq++)
        {
            Assert.True(connection.Send(Frame(conversation, seq)));
        }
        Assert.False(connection.Send(Frame(conversation, 10)));

        Assert.Equal("slow_consumer", connection.CloseReason);
        Assert.Equal(WebSocketState.Aborted, socket.State);
        transport.Release();
        await connection.WriterStoppedAsync().WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(connection.Send(Frame(conversation, 11)));
    }

    private static (ChatConnection Connection, WebSocket Socket) Connect(StallingTransport transport, int queueLimit)
    {
        var stream = new FrameBatchingStream(new DefaultHttpContext(), transport);
        var socket = WebSocket.CreateFromStream(stream, new WebSocketCreationOptions { IsServer = true });
        stream.Socket = socket;
        return (new ChatConnection(Guid.NewGuid(), socket, queueLimit, stream), socket);
    }

    private static OutboundFrame Frame(Guid conversation, long seq, string? padding = null) =>
        new(conversation, seq, Encoding.UTF8.GetBytes(padding is null ? $"{{\"seq\":{seq}}}" : $"{{\"seq\":{seq},\"pad\":\"{padding}\"}}"), 0);

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not reached in time");
            await Task.Delay(10);
        }
    }

    /// <summary>Records what the server writes; the first write waits until released. Reads never complete.</summary>
    private sealed class StallingTransport : Stream
    {
        private readonly MemoryStream _written = new();
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource FirstWriteStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Writes { get; private set; }

        public int LargestWrite { get; private set; }

        public void Release() => _release.TrySetResult();

        /// <summary>The text messages written so far, decoded by a client-side WebSocket.</summary>
        public List<string> Messages()
        {
            byte[] bytes;
            lock (_written)
            {
                bytes = _written.ToArray();
            }
            var reader = WebSocket.CreateFromStream(new MemoryStream(bytes), new WebSocketCreationOptions { IsServer = false });
            var messages = new List<string>();
            var buffer = new byte[64 * 1024];
            while (true)
            {
                ValueWebSocketReceiveResult result;
                try
                {
                    result = reader.ReceiveAsync(buffer.AsMemory(), CancellationToken.None).AsTask().GetAwaiter().GetResult();
                }
                catch (WebSocketException)
                {
                    return messages;
                }
                messages.Add(Encoding.UTF8.GetString(buffer, 0, result.Count));
            }
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (Writes == 0)
            {
                FirstWriteStarted.TrySetResult();
                await _release.Task;
            }
            lock (_written)
            {
                Writes++;
                LargestWrite = Math.Max(LargestWrite, buffer.Length);
                _written.Write(buffer.Span);
            }
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
            return 0;
        }

        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
    }
}
