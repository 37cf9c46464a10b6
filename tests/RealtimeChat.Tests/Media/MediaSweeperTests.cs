using System.Net;
using System.Security.Cryptography;
using RealtimeChat.Tests.Infrastructure;
using static RealtimeChat.Tests.Media.MediaRequests;

namespace RealtimeChat.Tests.Media;

[Collection(MediaSweeperCollection.Name)]
public sealed class MediaSweeperTests
{
    [Fact]
    public async Task Objects_with_no_media_row_older_than_the_grace_period_are_deleted_and_counted()
    {
        await using var server = await ChatServer.StartAsync(new()
        {
            ["Media:SweepInterval"] = "00:00:00.200",
            ["Media:OrphanGracePeriod"] = "00:10:00",
        });
        var alice = Guid.NewGuid();
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("sweep");
        var bytes = RandomNumberGenerator.GetBytes(70_000);
        var file = new ByteArrayContent(bytes);
        file.Headers.ContentType = new("application/octet-stream");
        var sent = await (await client.PostAsync($"/api/v1/conversations/{id}/media",
            new MultipartFormDataContent { { file, "file", "kept.bin" } })).JsonAsync(HttpStatusCode.Created);
        var mediaId = sent.GetProperty("media").GetProperty("id").GetGuid();
        var before = await MediaSweeperCollection.OrphansDeletedAsync(server);

        var root = Path.Combine(server.DataDirectory, "media");
        var old = DateTime.UtcNow.AddHours(-2);
        var kept = Path.Combine(root, Key(mediaId));
        Assert.True(File.Exists(kept));
        File.SetLastWriteTimeUtc(kept, old);
        // What a crash between writing the object and committing its message leaves: an object no row names.
        var orphan = Write(root, Key(Guid.CreateVersion7()), old);
        var partial = Write(root, $"{Key(Guid.CreateVersion7())}.{Guid.NewGuid():N}.partial", old);
        var young = Write(root, Key(Guid.CreateVersion7()), DateTime.UtcNow);
        var foreign = Write(root, "lost+found/notes.txt", old);

        // The counter moves just after each delete, so a file can be gone a moment before it is counted.
        for (var attempt = 0; File.Exists(orphan) || File.Exists(partial) || await MediaSweeperCollection.OrphansDeletedAsync(server) - before < 2; attempt++)
        {
            Assert.True(attempt < 100, "The sweeper did not delete the orphaned objects.");
            await Task.Delay(100);
        }

        Assert.True(File.Exists(young), "an object younger than the grace period may belong to an upload about to commit");
        Assert.True(File.Exists(foreign), "objects the service did not name are left alone");
        var download = await client.GetAsync($"/api/v1/media/{mediaId}");
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal(bytes, await download.Content.ReadAsByteArrayAsync());
        Assert.Equal(2, await MediaSweeperCollection.OrphansDeletedAsync(server) - before);
    }

    private static string Write(string root, string key, DateTime modified)
    {
        var path = Path.Combine(root, key);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, RandomNumberGenerator.GetBytes(100));
        File.SetLastWriteTimeUtc(path, modified);
        return path;
    }
}

/// <summary>
/// Tests that count deleted orphans run one at a time: <c>chat_media_orphans_deleted_total</c> is one counter for the
/// whole test process, so each such test compares it before and after.
/// </summary>
[CollectionDefinition(Name)]
public sealed class MediaSweeperCollection
{
    public const string Name = "Media sweeper";

    public static Task<double> OrphansDeletedAsync(ChatServer server) => server.Client().MetricAsync("chat_media_orphans_deleted_total");
}
