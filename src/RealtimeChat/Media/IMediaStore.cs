namespace RealtimeChat.Media;

/// <summary>Where media bytes live (local directory or S3-compatible bucket). Keys are opaque to callers.</summary>
public interface IMediaStore
{
    Task DeleteAsync(string storageKey, CancellationToken cancellationToken);
}
