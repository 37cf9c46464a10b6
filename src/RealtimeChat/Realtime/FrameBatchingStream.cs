using System.Buffers;
using System.Net.WebSockets;

namespace RealtimeChat.Realtime;

/// <summary>
/// The upgraded connection under a server WebSocket. While <see cref="Hold"/> is set, writes collect in a pooled buffer
/// and go out with the next write that is not held, so a connection with a backlog sends many frames in one socket
/// write (one system call) instead of one each. The WebSocket writes one frame at a time under its own send lock, so the
/// buffer is never written concurrently; a keep-alive ping that lands between held frames simply rides along.
/// </summary>
internal sealed class FrameBatchingStream(HttpContext context, Stream inner) : Stream
{
    // Past this much held data the batch goes out anyway, so a long backlog does not become one large buffer.
    internal const int MaxHeldBytes = 32 * 1024;

    private byte[]? _held;
    private int _heldLength;
    private volatile bool _hold;

    public WebSocket? Socket { get; set; }

    /// <summary>Set by the connection's writer when another frame is queued right behind the one it sends now.</summary>
    public void Hold(bool more) => _hold = more;

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_hold && _heldLength + buffer.Length <= MaxHeldBytes)
        {
            Append(buffer.Span);
            return ValueTask.CompletedTask;
        }
        if (_heldLength == 0)
        {
            return inner.WriteAsync(buffer, cancellationToken);
        }
        Append(buffer.Span);
        return WriteHeldAsync(cancellationToken);
    }

    public override Task FlushAsync(CancellationToken cancellationToken) =>
        _hold && _heldLength > 0 ? Task.CompletedTask : inner.FlushAsync(cancellationToken);

    private void Append(ReadOnlySpan<byte> data)
    {
        if (_held is null || _held.Length < _heldLength + data.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_heldLength + data.Length, 4096));
            if (_held is not null)
            {
                _held.AsSpan(0, _heldLength).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_held);
            }
            _held = larger;
        }
        data.CopyTo(_held.AsSpan(_heldLength));
        _heldLength += data.Length;
    }

    private async ValueTask WriteHeldAsync(CancellationToken cancellationToken)
    {
        var held = _held!;
        var length = _heldLength;
        _held = null;
        _heldLength = 0;
        try
        {
            await inner.WriteAsync(held.AsMemory(0, length), cancellationToken);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(held);
        }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        inner.ReadAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        inner.ReadAsync(buffer, offset, count, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count).GetAwaiter().GetResult();

    public override void Flush() => FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        // Kestrel's upgraded stream ignores Dispose, not knowing whether the close was graceful; an aborted WebSocket
        // (Abort, keep-alive timeout) must tear the connection down (what ASP.NET Core's own accept does too).
        if (disposing && Socket?.State == WebSocketState.Aborted)
        {
            context.Abort();
        }
        inner.Dispose();
        base.Dispose(disposing);
    }
}
