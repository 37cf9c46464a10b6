using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>
/// The S3-compatible server the S3 tests run against: <c>CHAT_S3_ENDPOINT</c>, <c>CHAT_S3_ACCESS_KEY</c> and
/// <c>CHAT_S3_SECRET_KEY</c>, which <c>scripts/s3.sh</c> exports. <c>CHAT_TEST_S3=required</c> (what scripts/test.sh
/// sets) makes a missing server a failure instead of a skip.
/// </summary>
public static class TestS3
{
    public static string? Endpoint => Environment.GetEnvironmentVariable("CHAT_S3_ENDPOINT") is { Length: > 0 } endpoint ? endpoint : null;

    public static bool Required =>
        string.Equals(Environment.GetEnvironmentVariable("CHAT_TEST_S3"), "required", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A bucket of its own, as a test server gets a database of its own: the sweeper deletes whatever in its bucket no
    /// row of its database names, so two servers sharing a bucket would delete each other's media.
    /// </summary>
    public static async Task<TestBucket> CreateBucketAsync()
    {
        var endpoint = Endpoint ?? throw new InvalidOperationException(
            "CHAT_TEST_S3=required but CHAT_S3_ENDPOINT is not set (source scripts/s3.sh to start an S3 server).");
        var (accessKey, secretKey) = (Environment.GetEnvironmentVariable("CHAT_S3_ACCESS_KEY"), Environment.GetEnvironmentVariable("CHAT_S3_SECRET_KEY"));
        var client = new AmazonS3Client(new BasicAWSCredentials(accessKey, secretKey), new AmazonS3Config
        {
            ServiceURL = endpoint,
            ForcePathStyle = true,
            AuthenticationRegion = "us-east-1",
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        });
        var name = $"chat-test-{Guid.NewGuid():N}";
        await client.PutBucketAsync(new PutBucketRequest { BucketName = name });
        return new TestBucket(client, name, new Dictionary<string, string?>
        {
            ["Media:Provider"] = "S3",
            ["Media:S3:ServiceUrl"] = endpoint,
            ["Media:S3:Bucket"] = name,
            ["Media:S3:AccessKey"] = accessKey,
            ["Media:S3:SecretKey"] = secretKey,
        });
    }
}

/// <summary>A bucket on the test S3 server, read and written directly (not through the service).</summary>
public sealed class TestBucket(AmazonS3Client client, string name, Dictionary<string, string?> settings) : IAsyncDisposable
{
    public string Name { get; } = name;

    /// <summary>The service's configuration for this bucket; add more settings to a copy.</summary>
    public Dictionary<string, string?> Settings { get; } = settings;

    public async Task<List<string>> KeysAsync()
    {
        var keys = new List<string>();
        var request = new ListObjectsV2Request { BucketName = Name };
        ListObjectsV2Response response;
        do
        {
            response = await client.ListObjectsV2Async(request);
            keys.AddRange((response.S3Objects ?? []).Select(o => o.Key));
            request.ContinuationToken = response.NextContinuationToken;
        } while (response.IsTruncated == true);
        return keys;
    }

    public async Task<byte[]> ReadAsync(string key)
    {
        using var response = await client.GetObjectAsync(Name, key);
        using var bytes = new MemoryStream();
        await response.ResponseStream.CopyToAsync(bytes);
        return bytes.ToArray();
    }

    public Task PutAsync(string key, byte[] bytes) =>
        client.PutObjectAsync(new PutObjectRequest { BucketName = Name, Key = key, InputStream = new MemoryStream(bytes) });

    public async ValueTask DisposeAsync()
    {
        foreach (var key in await KeysAsync())
        {
            await client.DeleteObjectAsync(Name, key);
        }
        await client.DeleteBucketAsync(Name);
        client.Dispose();
    }
}

/// <summary>
/// A test against the S3 server. Without one (no <c>CHAT_S3_ENDPOINT</c>) it is reported as skipped with the reason,
/// never as passed; with <c>CHAT_TEST_S3=required</c> it runs and fails.
/// </summary>
public sealed class S3FactAttribute : FactAttribute
{
    public S3FactAttribute()
    {
        if (TestS3.Endpoint is null && !TestS3.Required)
        {
            Skip = "S3 tests NOT RUN: no S3 server (source scripts/s3.sh, which sets CHAT_S3_ENDPOINT, or run scripts/test.sh).";
        }
    }
}
