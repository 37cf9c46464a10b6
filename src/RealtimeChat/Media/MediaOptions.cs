using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Media;

public enum MediaProvider
{
    Local,
    S3,
}

public sealed class MediaOptions : IValidatableObject
{
    public const string Section = "Media";

    public static readonly IReadOnlyList<string> DefaultAllowedContentTypes =
        ["audio/*", "image/*", "video/*", "application/pdf", "text/plain", "application/octet-stream", "application/zip"];

    public MediaProvider Provider { get; set; } = MediaProvider.Local;

    /// <summary>Where the local provider keeps files; defaults to <c>media</c> in the data directory.</summary>
    public string? LocalDirectory { get; set; }

    /// <summary>Largest file accepted, in bytes.</summary>
    [Range(1, 4L * 1024 * 1024 * 1024)]
    public long MaxUploadBytes { get; set; } = 25 * 1024 * 1024;

    /// <summary>
    /// Accepted content types, exact (<c>application/pdf</c>) or by top-level type (<c>audio/*</c>).
    /// Left unset rather than pre-filled because configuration binding appends to a pre-filled list.
    /// </summary>
    public string[]? AllowedContentTypes { get; set; }

    public S3MediaOptions S3 { get; set; } = new();

    /// <summary>
    /// How old an object with no media row must be before the sweeper deletes it. An upload's object is written
    /// just before its row commits, so this only has to outlast that moment (and clock skew with an S3 server).
    /// </summary>
    public TimeSpan OrphanGracePeriod { get; set; } = TimeSpan.FromHours(1);

    /// <summary>How often the store is swept for orphaned objects; zero turns the sweeper off.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromMinutes(30);

    public IReadOnlyList<string> EffectiveAllowedContentTypes =>
        AllowedContentTypes is { Length: > 0 } configured ? configured : DefaultAllowedContentTypes;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (EffectiveAllowedContentTypes.Any(type => !IsContentTypePattern(type)))
        {
            yield return new ValidationResult(
                "Media:AllowedContentTypes entries must look like 'type/subtype' or 'type/*'.", [nameof(AllowedContentTypes)]);
        }
        if (OrphanGracePeriod < TimeSpan.Zero || SweepInterval < TimeSpan.Zero)
        {
            yield return new ValidationResult("Media:OrphanGracePeriod and Media:SweepInterval cannot be negative.", [nameof(OrphanGracePeriod)]);
        }
        if (Provider != MediaProvider.S3)
        {
            yield break;
        }
        if (string.IsNullOrWhiteSpace(S3.Bucket))
        {
            yield return new ValidationResult("Media:S3:Bucket is required when Media:Provider is S3.", [nameof(S3)]);
        }
        if (string.IsNullOrWhiteSpace(S3.ServiceUrl) && string.IsNullOrWhiteSpace(S3.Region))
        {
            yield return new ValidationResult("Media:S3:Region is required when Media:S3:ServiceUrl is not set.", [nameof(S3)]);
        }
        if (string.IsNullOrEmpty(S3.AccessKey) != string.IsNullOrEmpty(S3.SecretKey))
        {
            yield return new ValidationResult("Media:S3:AccessKey and Media:S3:SecretKey must be set together.", [nameof(S3)]);
        }
        if (S3.ListPageSize is < 1 or > S3MediaOptions.MaxListPageSize)
        {
            yield return new ValidationResult($"Media:S3:ListPageSize must be between 1 and {S3MediaOptions.MaxListPageSize}.", [nameof(S3)]);
        }
    }

    /// <summary>Whether <paramref name="mediaType"/> (lower-case, no parameters) is on the allow-list.</summary>
    public bool Allows(string mediaType) => EffectiveAllowedContentTypes.Any(pattern =>
        pattern.EndsWith("/*", StringComparison.Ordinal)
            ? mediaType.StartsWith(pattern[..^1], StringComparison.OrdinalIgnoreCase)
            : string.Equals(pattern, mediaType, StringComparison.OrdinalIgnoreCase));

    private static bool IsContentTypePattern(string value)
    {
        var slash = value.IndexOf('/');
        return slash > 0 && slash < value.Length - 1 && value.IndexOf('/', slash + 1) < 0 && !value.Any(char.IsWhiteSpace);
    }
}

/// <summary>An S3-compatible bucket (AWS, MinIO, …).</summary>
public sealed class S3MediaOptions
{
    /// <summary>Endpoint of an S3-compatible server, e.g. <c>http://minio:9000</c>; unset for AWS.</summary>
    public string? ServiceUrl { get; set; }

    public string? Bucket { get; set; }

    /// <summary>Signing region; with a ServiceUrl defaults to us-east-1.</summary>
    public string? Region { get; set; }

    /// <summary>With neither key set, the AWS SDK's default credential chain applies (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles).</summary>
    public string? AccessKey { get; set; }

    public string? SecretKey { get; set; }

    /// <summary>Bucket in the path rather than the host name, as MinIO and most S3-compatible servers expect.</summary>
    public bool ForcePathStyle { get; set; } = true;

    /// <summary>S3 answers at most this many keys per ListObjectsV2 request.</summary>
    public const int MaxListPageSize = 1000;

    /// <summary>
    /// Keys asked for per ListObjectsV2 request when the sweeper lists the bucket. Smaller pages make each request
    /// cheaper on a server that struggles with large listings; the tests use a few keys to exercise paging.
    /// </summary>
    public int ListPageSize { get; set; } = MaxListPageSize;
}
