namespace RealtimeChat.Media;

/// <summary>
/// The plaintext of one stored file as a seekable stream, so the framework's range handling can serve byte
/// ranges. Reads open and decrypt only the chunks they touch, one chunk in memory at a time; sequential reads
/// share one open source stream.
/// </summary>
internal sealed class MediaReadStream(IMediaStore store, string storageKey, MediaChunkSealer sealer, long length) : Stream
{
    private readonly byte[] _sealed = new byte[MediaCipher.SealedChunkSize];
    private readonly byte[] _plaintext = new byte[MediaCipher.ChunkSize];
    private long _position;
    private long _bufferedChunk = -1;
    private int _bufferedLength;
    private Stream? _source;
    private long _sourceNextChunk;

    public override bool CanRead => true;

    public override bool CanSeek => true;

    public override bool CanWrite => false;

    public override long Length => length;

    public override long Position
    {
        get => _position;
        set => _position = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value));
    }

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        SeekOrigin.End => length + offset,
        _ => throw new ArgumentOutOfRangeException(nameof(origin)),
    };

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position >= length || buffer.IsEmpty)
        {
            return 0;
        }
        var chunk = _position / MediaCipher.ChunkSize;
        if (chunk != _bufferedChunk)
        {
            await LoadChunkAsync(chunk, cancellationToken);
        }
        var offset = (int)(_position - chunk * MediaCipher.ChunkSize);
        var count = Math.Min(buffer.Length, _bufferedLength - offset);
        _plaintext.AsMemory(offset, count).CopyTo(buffer);
        _position += count;
        return count;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    // Kestrel forbids synchronous I/O, and a synchronous S3 read would block a thread on the network.
    public override int Read(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("Media streams are read asynchronously.");

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override async ValueTask DisposeAsync()
    {
        if (_source is not null)
        {
            await _source.DisposeAsync();
            _source = null;
        }
        await base.DisposeAsync();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _source?.Dispose();
            sealer.Dispose();
        }
        base.Dispose(disposing);
    }

    private async Task LoadChunkAsync(long chunk, CancellationToken cancellationToken)
    {
        if (_source is null || _sourceNextChunk != chunk)
        {
            if (_source is not null)
            {
                await _source.DisposeAsync();
            }
            _source = null;
            _source = await store.OpenReadAsync(storageKey, chunk * MediaCipher.SealedChunkSize, cancellationToken);
            _sourceNextChunk = chunk;
        }
        var plaintextLength = (int)Math.Min(MediaCipher.ChunkSize, length - chunk * MediaCipher.ChunkSize);
        _bufferedChunk = -1;
        await _source.ReadExactlyAsync(_sealed.AsMemory(0, plaintextLength + MediaCipher.TagSize), cancellationToken);
        _sourceNextChunk = chunk + 1;
        sealer.Open(chunk, _sealed.AsSpan(0, plaintextLength + MediaCipher.TagSize), _plaintext);
        _bufferedChunk = chunk;
        _bufferedLength = plaintextLength;
    }
}
