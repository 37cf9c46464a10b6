namespace RealtimeChat.Media;

/// <summary>
/// Where media bytes live (local directory or S3-compatible bucket). Keys are opaque to callers. The store
/// only ever sees ciphertext: <see cref="MediaCipher"/> seals the bytes before they reach it.
/// </summary>
public interface IMediaStore
{
    /// <summary>
    /// Stores the bytes <paramref name="writeContent"/> writes under <paramref name="storageKey"/>. If it throws,
    /// nothing is left under the key.
    /// </summary>
    Task WriteAsync(string storageKey, Func<Stream, CancellationToken, Task> writeContent, CancellationToken cancellationToken);

    /// <summary>The stored bytes from <paramref name="offset"/> to the end.</summary>
    Task<Stream> OpenReadAsync(string storageKey, long offset, CancellationToken cancellationToken);

    /// <summary>Removes the object; a missing one is not an error.</summary>
    Task DeleteAsync(string storageKey, CancellationToken cancellationToken);

    /// <summary>Every stored object (including a local store's leftover partial writes), for the orphan sweeper.</summary>
    IAsyncEnumerable<StoredObject> ListAsync(CancellationToken cancellationToken);
}

/// <param name="LastModified">When the object was last written.</param>
public sealed record StoredObject(string StorageKey, DateTimeOffset LastModified);
