using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;
using static RealtimeChat.Tests.Media.MediaRequests;

namespace RealtimeChat.Tests.Media;

/// <summary>Media with <c>Media:Provider=S3</c>, against the S3 server scripts/s3.sh starts.</summary>
[Collection(MediaSweeperCollection.Name)]
public sealed class S3MediaTests
{
    private const int Chunk = 64 * 1024;
    private const int TagSize = 16;

    [S3Fact]
    public async Task Audio_and_images_round_trip_whole_and_by_range_and_the_bucket_holds_only_ciphertext()
    {
        await using var bucket = await TestS3.CreateBucketAsync();
        await using var server = await ChatServer.StartAsync(bucket.Settings);
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = server.Client(alice);
        var conversation = await aliceClient.CreateGroupAsync("s3", bob);
        // Every 16-byte run names its own position, so a range served from the wrong place cannot match by chance.
        var audio = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, (3 * Chunk + 4000) / 16).Select(i => $"AUDIO-{i:D9}|")));
        var image = RandomNumberGenerator.GetBytes(Chunk + 5);

        var voice = await (await aliceClient.PostAsync($"/api/v1/conversations/{conversation}/messages/audio",
            Form(audio, "audio/ogg; codecs=opus", "voice.ogg"))).JsonAsync(HttpStatusCode.Created);
        var picture = await (await aliceClient.PostAsync($"/api/v1/conversations/{conversation}/media",
            Form(image, "image/png", "cat.png"))).JsonAsync(HttpStatusCode.Created);
        Assert.Equal("audio", voice.GetProperty("type").GetString());
        Assert.Equal("image", picture.GetProperty("type").GetString());
        var audioId = voice.GetProperty("media").GetProperty("id").GetGuid();
        var imageId = picture.GetProperty("media").GetProperty("id").GetGuid();

        var bobClient = server.Client(bob);
        foreach (var (id, bytes, type) in new[] { (audioId, audio, "audio/ogg; codecs=opus"), (imageId, image, "image/png") })
        {
            using var whole = await bobClient.GetAsync($"/api/v1/media/{id}");
            Assert.Equal(HttpStatusCode.OK, whole.StatusCode);
            Assert.Equal(type, whole.Content.Headers.ContentType?.ToString());
            Assert.Equal(bytes, await whole.Content.ReadAsByteArrayAsync());
        }
        var size = audio.Length;
        await AssertRangeAsync("bytes=0-0", 0, 0);
        await AssertRangeAsync($"bytes={Chunk - 6}-{Chunk + 9}", Chunk - 6, Chunk + 9);
        await AssertRangeAsync($"bytes=1000-{2 * Chunk + 17}", 1000, 2 * Chunk + 17);
        await AssertRangeAsync($"bytes={2 * Chunk}-", 2 * Chunk, size - 1);
        await AssertRangeAsync("bytes=-1000", size - 1000, size - 1);
        using (var unsatisfiable = await GetRangeAsync(bobClient, audioId, $"bytes={size}-"))
        {
            Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, unsatisfiable.StatusCode);
        }

        Assert.Equal(
            new[] { await StorageKeyAsync(server, audioId), await StorageKeyAsync(server, imageId) }.Order(),
            (await bucket.KeysAsync()).Order());
        var storedAudio = await bucket.ReadAsync(await StorageKeyAsync(server, audioId));
        Assert.Equal(audio.Length + 4 * TagSize, storedAudio.Length);
        Assert.Equal(-1, storedAudio.AsSpan().IndexOf("AUDIO-"u8));
        var storedImage = await bucket.ReadAsync(await StorageKeyAsync(server, imageId));
        Assert.Equal(image.Length + 2 * TagSize, storedImage.Length);
        Assert.Equal(-1, storedImage.AsSpan().IndexOf(image.AsSpan(Chunk / 2, 32)));

        Task AssertRangeAsync(string range, int from, int to) => MediaRequests.AssertRangeAsync(bobClient, audioId, audio, range, from, to);
    }

    [S3Fact]
    public async Task Deleting_the_message_deletes_its_object_from_the_bucket()
    {
        await using var bucket = await TestS3.CreateBucketAsync();
        await using var server = await ChatServer.StartAsync(bucket.Settings);
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var conversation = await client.CreateGroupAsync("erase", bob);
        var sent = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(RandomNumberGenerator.GetBytes(5000), "audio/aac", "a.aac")))
            .JsonAsync(HttpStatusCode.Created);
        var mediaId = sent.GetProperty("media").GetProperty("id").GetGuid();
        Assert.Equal([await StorageKeyAsync(server, mediaId)], await bucket.KeysAsync());

        var delete = await client.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{sent.GetProperty("id").GetGuid()}");
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);

        await (await server.Client(bob).GetAsync($"/api/v1/media/{mediaId}")).ProblemAsync(HttpStatusCode.NotFound, "media_not_found");
        Assert.Empty(await bucket.KeysAsync());
    }

    [S3Fact]
    public async Task Refused_and_retried_uploads_leave_no_extra_object_in_the_bucket()
    {
        await using var bucket = await TestS3.CreateBucketAsync();
        await using var server = await ChatServer.StartAsync(new(bucket.Settings) { ["Media:MaxUploadBytes"] = "100000", ["Messages:MaxContentBytes"] = "100" });
        var client = server.Client(Guid.NewGuid());
        var conversation = await client.CreateGroupAsync("refused");
        var url = $"/api/v1/conversations/{conversation}/media";

        await (await client.PostAsync(url, Form(new byte[100_001], "audio/ogg", "big.ogg"))).ProblemAsync(HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        // A field after the file part is read once the file is stored: refusing it must remove the object again.
        await (await client.PostAsync(url, Form(RandomNumberGenerator.GetBytes(Chunk + 1), "audio/ogg", "a.ogg", ("caption", new string('x', 101)))))
            .ProblemAsync(HttpStatusCode.BadRequest, "caption_too_long");
        Assert.Empty(await bucket.KeysAsync());

        var bytes = RandomNumberGenerator.GetBytes(Chunk + 10);
        var first = await (await client.PostAsync(url, Form(bytes, "audio/ogg", "v.ogg", ("client_message_id", "upload-1")))).JsonAsync(HttpStatusCode.Created);
        var retry = await (await client.PostAsync(url, Form(bytes, "audio/ogg", "v.ogg", ("client_message_id", "upload-1")))).JsonAsync(HttpStatusCode.OK);
        var mediaId = first.GetProperty("media").GetProperty("id").GetGuid();
        Assert.Equal(mediaId, retry.GetProperty("media").GetProperty("id").GetGuid());
        Assert.Equal([await StorageKeyAsync(server, mediaId)], await bucket.KeysAsync());
    }

    [S3Fact]
    public async Task The_sweeper_deletes_and_counts_old_orphans_across_listing_pages_and_keeps_fresh_and_referenced_objects()
    {
        await using var bucket = await TestS3.CreateBucketAsync();
        var grace = TimeSpan.FromSeconds(12);
        await using var server = await ChatServer.StartAsync(new(bucket.Settings)
        {
            ["Media:SweepInterval"] = "00:00:00.250",
            ["Media:OrphanGracePeriod"] = grace.ToString(),
            // 15 objects in the bucket below: three pages.
            ["Media:S3:ListPageSize"] = "5",
        });
        var client = server.Client(Guid.NewGuid());
        var conversation = await client.CreateGroupAsync("sweep");
        var kept = RandomNumberGenerator.GetBytes(70_000);
        var sent = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(kept, "image/jpeg", "kept.jpg")))
            .JsonAsync(HttpStatusCode.Created);
        var mediaId = sent.GetProperty("media").GetProperty("id").GetGuid();
        var before = await MediaSweeperCollection.OrphansDeletedAsync(server);

        // What a crash between storing an object and committing its message leaves: objects no row names. Twelve of
        // the fifteen objects, so the last page holds some whichever way the keys sort.
        var orphans = Enumerable.Range(0, 12).Select(_ => Key(Guid.CreateVersion7())).ToList();
        foreach (var orphan in orphans)
        {
            await bucket.PutAsync(orphan, RandomNumberGenerator.GetBytes(100));
        }
        await bucket.PutAsync("backups/notes.txt", [1, 2, 3]);
        // Half a grace period later: still too young when the orphans above become old enough, so the sweep that
        // deletes them must leave it, as it would an upload about to commit.
        await Task.Delay(grace / 2);
        var fresh = Key(Guid.CreateVersion7());
        await bucket.PutAsync(fresh, RandomNumberGenerator.GetBytes(100));

        var waited = System.Diagnostics.Stopwatch.StartNew();
        List<string> keys;
        // The counter moves just after each delete, so a listing can show the last orphan gone a moment before.
        while ((keys = await bucket.KeysAsync()).Intersect(orphans).Any()
            || await MediaSweeperCollection.OrphansDeletedAsync(server) - before < orphans.Count)
        {
            Assert.True(waited.Elapsed < grace * 3, $"The sweeper left orphans: {string.Join(", ", keys.Intersect(orphans))}");
            await Task.Delay(100);
        }

        Assert.Equal(new[] { await StorageKeyAsync(server, mediaId), "backups/notes.txt", fresh }.Order(), keys.Order());
        Assert.Equal(orphans.Count, await MediaSweeperCollection.OrphansDeletedAsync(server) - before);
        using var download = await client.GetAsync($"/api/v1/media/{mediaId}");
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal(kept, await download.Content.ReadAsByteArrayAsync());
    }

    private static async Task<string> StorageKeyAsync(ChatServer server, Guid mediaId)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return (await connection.ExecuteScalarAsync<string>("SELECT storage_key FROM media WHERE id = @mediaId", new { mediaId }))!;
    }
}
