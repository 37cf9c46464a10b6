using System.Buffers.Binary;
using System.Security.Cryptography;
using RealtimeChat.Storage;

namespace RealtimeChat.Media;

/// <summary>
/// Encryption at rest for media bytes. Every file has its own random 256-bit data key, stored only wrapped by
/// <see cref="ContentCipher"/> in its <c>media</c> row: deleting the row crypto-erases the file wherever its
/// bytes linger. The plaintext is cut into <see cref="ChunkSize"/> chunks, each sealed on its own with
/// AES-256-GCM, so a byte range is served by opening only the chunks it touches. The stored object is the
/// sealed chunks back to back (ciphertext then tag); it has no header, so a chunk's offset follows from its index.
/// </summary>
public sealed class MediaCipher(ContentCipher contentCipher)
{
    public const int ChunkSize = 64 * 1024;
    public const int TagSize = 16;
    public const int SealedChunkSize = ChunkSize + TagSize;

    private const byte KeyFormatVersion = 1;
    private const int DataKeySize = 32;

    /// <summary>A fresh data key for <paramref name="mediaId"/>, and its wrapped form for the media row.</summary>
    public (MediaChunkSealer Sealer, byte[] WrappedKey) CreateKey(Guid mediaId)
    {
        Span<byte> material = stackalloc byte[1 + MediaChunkSealer.NoncePrefixSize + DataKeySize];
        try
        {
            material[0] = KeyFormatVersion;
            RandomNumberGenerator.Fill(material[1..]);
            return (Sealer(material, mediaId), contentCipher.Encrypt(material, mediaId.ToByteArray()));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(material);
        }
    }

    public MediaChunkSealer OpenKey(byte[] wrappedKey, Guid mediaId)
    {
        var material = contentCipher.Decrypt(wrappedKey, mediaId.ToByteArray());
        try
        {
            if (material.Length != 1 + MediaChunkSealer.NoncePrefixSize + DataKeySize || material[0] != KeyFormatVersion)
            {
                throw new CryptographicException($"Unknown media key format for media {mediaId}.");
            }
            return Sealer(material, mediaId);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(material);
        }
    }

    private static MediaChunkSealer Sealer(ReadOnlySpan<byte> material, Guid mediaId) =>
        new(material.Slice(1 + MediaChunkSealer.NoncePrefixSize, DataKeySize), material.Slice(1, MediaChunkSealer.NoncePrefixSize), mediaId);
}

/// <summary>
/// Seals and opens the chunks of one file. A chunk's nonce is the file's random prefix and the chunk index
/// (unique per key, as the key is used for one file only); its associated data is the media id and chunk index,
/// so chunks cannot be reordered within a file or moved between files.
/// </summary>
public sealed class MediaChunkSealer : IDisposable
{
    public const int NoncePrefixSize = 4;

    private readonly AesGcm _aes;
    private readonly byte[] _noncePrefix;
    private readonly byte[] _mediaId;

    internal MediaChunkSealer(ReadOnlySpan<byte> dataKey, ReadOnlySpan<byte> noncePrefix, Guid mediaId)
    {
        _aes = new AesGcm(dataKey, MediaCipher.TagSize);
        _noncePrefix = noncePrefix.ToArray();
        _mediaId = mediaId.ToByteArray();
    }

    /// <summary>Writes the ciphertext then the tag of chunk <paramref name="index"/> to <paramref name="output"/>.</summary>
    public void Seal(long index, ReadOnlySpan<byte> plaintext, Span<byte> output)
    {
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> associatedData = stackalloc byte[24];
        Describe(index, nonce, associatedData);
        _aes.Encrypt(nonce, plaintext, output[..plaintext.Length], output.Slice(plaintext.Length, MediaCipher.TagSize), associatedData);
    }

    /// <summary>Checks and decrypts chunk <paramref name="index"/> (ciphertext then tag); throws if it was altered.</summary>
    public void Open(long index, ReadOnlySpan<byte> sealedChunk, Span<byte> plaintext)
    {
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> associatedData = stackalloc byte[24];
        Describe(index, nonce, associatedData);
        var length = sealedChunk.Length - MediaCipher.TagSize;
        _aes.Decrypt(nonce, sealedChunk[..length], sealedChunk[length..], plaintext[..length], associatedData);
    }

    public void Dispose() => _aes.Dispose();

    private void Describe(long index, Span<byte> nonce, Span<byte> associatedData)
    {
        _noncePrefix.CopyTo(nonce);
        BinaryPrimitives.WriteInt64BigEndian(nonce[NoncePrefixSize..], index);
        _mediaId.CopyTo(associatedData);
        BinaryPrimitives.WriteInt64BigEndian(associatedData[16..], index);
    }
}
