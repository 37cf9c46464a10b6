using Amazon;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Media;

/// <summary>Objects in an S3-compatible bucket (AWS S3, MinIO, …).</summary>
public sealed class S3MediaStore : IMediaStore, IDisposable
{
    private const int BufferSize = 64 * 1024;
    private readonly AmazonS3Client _client;
    private readonly string _bucket;
    private readonly int _listPageSize;

    public S3MediaStore(IOptions<MediaOptions> options)
    {
        var s3 = options.Value.S3;
        _bucket = s3.Bucket!;
        _listPageSize = s3.ListPageSize;
        var config = new AmazonS3Config
        {
            ForcePathStyle = s3.ForcePathStyle,
            // Many S3-compatible servers reject the SDK's default trailing request checksums.
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        };
        if (string.IsNullOrWhiteSpace(s3.ServiceUrl))
        {
            config.RegionEndpoint = RegionEndpoint.GetBySystemName(s3.Region);
        }
        else
        {
            config.ServiceURL = s3.ServiceUrl;
            config.AuthenticationRegion = string.IsNullOrWhiteSpace(s3.Region) ? "us-east-1" : s3.Region;
        }
        _client = string.IsNullOrEmpty(s3.AccessKey)
            ? new AmazonS3Client(config)
            : new AmazonS3Client(new BasicAWSCredentials(s3.AccessKey, s3.SecretKey), config);
    }

    public async Task WriteAsync(string storageKey, Func<Stream, CancellationToken, Task> writeContent, CancellationToken cancellationToken)
    {
        // Spooled to a temporary file (ciphertext only) so the upload has a known length and memory stays bounded.
        var spool = Path.Combine(Path.GetTempPath(), $"chat-media-{Guid.NewGuid():N}.partial");
        await using var file = new FileStream(spool, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.ReadWrite,
            Options = FileOptions.Asynchronous | FileOptions.DeleteOnClose,
            BufferSize = BufferSize,
        });
        await writeContent(file, cancellationToken);
        await file.FlushAsync(cancellationToken);
        file.Position = 0;
        await _client.PutObjectAsync(new PutObjectRequest
        {
            BucketName = _bucket,
            Key = storageKey,
            InputStream = file,
            AutoCloseStream = false,
            ContentType = "application/octet-stream",
        }, cancellationToken);
    }

    public async Task<Stream> OpenReadAsync(string storageKey, long offset, CancellationToken cancellationToken)
    {
        var response = await _client.GetObjectAsync(new GetObjectRequest
        {
            BucketName = _bucket,
            Key = storageKey,
            ByteRange = new ByteRange($"bytes={offset}-"),
        }, cancellationToken);
        return response.ResponseStream;
    }

    public Task DeleteAsync(string storageKey, CancellationToken cancellationToken) =>
        _client.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _bucket, Key = storageKey }, cancellationToken);

    public async IAsyncEnumerable<StoredObject> ListAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var request = new ListObjectsV2Request { BucketName = _bucket, MaxKeys = _listPageSize };
        ListObjectsV2Response response;
        do
        {
            response = await _client.ListObjectsV2Async(request, cancellationToken);
            foreach (var item in response.S3Objects ?? [])
            {
                yield return new StoredObject(item.Key, item.LastModified is { } modified ? new DateTimeOffset(modified.ToUniversalTime(), TimeSpan.Zero) : DateTimeOffset.UtcNow);
            }
            request.ContinuationToken = response.NextContinuationToken;
        } while (response.IsTruncated == true);
    }

    public void Dispose() => _client.Dispose();
}
