using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;
using static RealtimeChat.Tests.Media.MediaRequests;

namespace RealtimeChat.Tests.Media;

public sealed class MediaTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    // The service seals media in 64 KiB chunks; the files below span several so ranges cross chunk boundaries.
    private const int Chunk = 64 * 1024;
    private readonly ChatServer _server = fixture.Server;

    [Fact]
    public async Task Audio_upload_reaches_the_other_member_live_and_downloads_byte_exact()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = _server.Client(alice);
        var conversation = await aliceClient.CreateGroupAsync("voice", bob);
        await using var bobSocket = await _server.ConnectAsync(bob);
        var audio = RandomNumberGenerator.GetBytes(3 * Chunk + 123);

        var sent = await (await aliceClient.PostAsync($"/api/v1/conversations/{conversation}/media",
            Form(audio, "audio/ogg; codecs=opus", "grüße voice.ogg", ("duration_ms", "4200")))).JsonAsync(HttpStatusCode.Created);

        Assert.Equal("audio", sent.GetProperty("type").GetString());
        Assert.Equal("grüße voice.ogg", sent.GetProperty("content").GetString());
        var media = sent.GetProperty("media");
        var mediaId = media.GetProperty("id").GetGuid();
        Assert.Equal("audio/ogg; codecs=opus", media.GetProperty("content_type").GetString());
        Assert.Equal(audio.Length, media.GetProperty("size_bytes").GetInt64());
        Assert.Equal(4200, media.GetProperty("duration_ms").GetInt32());
        Assert.Equal("grüße voice.ogg", media.GetProperty("file_name").GetString());
        Assert.Equal($"/api/v1/media/{mediaId}", media.GetProperty("url").GetString());

        var frame = await bobSocket.WaitForAsync(f => f.Type == "message.new" && f.ConversationId == conversation);
        Assert.Equal(sent.GetProperty("id").GetGuid(), frame.Data.GetProperty("id").GetGuid());
        Assert.Equal(mediaId, frame.Data.GetProperty("media").GetProperty("id").GetGuid());
        Assert.Equal(4200, frame.Data.GetProperty("media").GetProperty("duration_ms").GetInt32());

        using var download = await _server.Client(bob).GetAsync(media.GetProperty("url").GetString());
        Assert.Equal(HttpStatusCode.OK, download.StatusCode);
        Assert.Equal(audio, await download.Content.ReadAsByteArrayAsync());
        Assert.Equal("audio/ogg; codecs=opus", download.Content.Headers.ContentType?.ToString());
        Assert.Equal(audio.Length, download.Content.Headers.ContentLength);
        Assert.Contains("bytes", download.Headers.AcceptRanges);
        Assert.Equal($"\"{mediaId}\"", download.Headers.ETag?.Tag);
        Assert.True(download.Headers.CacheControl?.Private);
        Assert.Equal("inline", download.Content.Headers.ContentDisposition?.DispositionType);
        Assert.Equal("grüße voice.ogg", download.Content.Headers.ContentDisposition?.FileNameStar);
        Assert.Equal("nosniff", download.Headers.GetValues("X-Content-Type-Options").Single());

        var listed = await aliceClient.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Equal(mediaId, listed.GetProperty("messages")[0].GetProperty("media").GetProperty("id").GetGuid());
    }

    [Fact]
    public async Task Audio_alias_and_captions_set_the_kind_and_content()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = _server.Client(alice);
        var conversation = await client.CreateGroupAsync("kinds", bob);

        var voice = await (await client.PostAsync($"/api/v1/conversations/{conversation}/messages/audio",
            Form([1, 2, 3], "audio/mp4", "memo.m4a", ("caption", "listen to this")))).JsonAsync(HttpStatusCode.Created);
        Assert.Equal("audio", voice.GetProperty("type").GetString());
        Assert.Equal("listen to this", voice.GetProperty("content").GetString());

        var image = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form([4, 5], "image/png", "cat.png")))
            .JsonAsync(HttpStatusCode.Created);
        Assert.Equal("image", image.GetProperty("type").GetString());
        Assert.Equal("cat.png", image.GetProperty("content").GetString());

        var pdf = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form([6], "application/pdf", "../../etc/report.pdf")))
            .JsonAsync(HttpStatusCode.Created);
        Assert.Equal("file", pdf.GetProperty("type").GetString());
        Assert.Equal("report.pdf", pdf.GetProperty("media").GetProperty("file_name").GetString());

        var reply = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media",
            Form([7], "text/plain", "notes.txt", ("reply_to", pdf.GetProperty("id").GetString()!)))).JsonAsync(HttpStatusCode.Created);
        Assert.Equal(pdf.GetProperty("id").GetGuid(), reply.GetProperty("reply_to").GetGuid());
        Assert.Equal(JsonValueKind.Null, reply.GetProperty("media").GetProperty("duration_ms").ValueKind);
    }

    [Fact]
    public async Task Byte_ranges_are_exact_across_chunk_boundaries()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var conversation = await _server.Client(alice).CreateGroupAsync("ranges", bob);
        var bytes = RandomNumberGenerator.GetBytes(3 * Chunk + 4000);
        var mediaId = await UploadAsync(_server.Client(alice), conversation, bytes, "audio/mpeg");
        var bobClient = _server.Client(bob);
        var size = bytes.Length;

        await AssertRangeAsync("bytes=0-0", 0, 0);
        await AssertRangeAsync($"bytes={Chunk - 6}-{Chunk + 9}", Chunk - 6, Chunk + 9);
        await AssertRangeAsync($"bytes=1000-{2 * Chunk + 17}", 1000, 2 * Chunk + 17);
        await AssertRangeAsync($"bytes={2 * Chunk}-", 2 * Chunk, size - 1);
        await AssertRangeAsync("bytes=-1000", size - 1000, size - 1);
        await AssertRangeAsync($"bytes={size - 1}-{size + 5000}", size - 1, size - 1);

        using (var unsatisfiable = await GetRangeAsync(bobClient, mediaId, "bytes=" + size + "-"))
        {
            Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, unsatisfiable.StatusCode);
            Assert.Equal($"bytes */{size}", unsatisfiable.Content.Headers.ContentRange?.ToString());
        }

        using (var notModified = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/media/{mediaId}"))
        {
            notModified.Headers.IfNoneMatch.Add(new EntityTagHeaderValue($"\"{mediaId}\""));
            using var response = await bobClient.SendAsync(notModified);
            Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
        }

        using (var staleRange = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/media/{mediaId}"))
        {
            staleRange.Headers.Range = new RangeHeaderValue(10, 20);
            staleRange.Headers.IfRange = new RangeConditionHeaderValue(new EntityTagHeaderValue($"\"{Guid.NewGuid()}\""));
            using var response = await bobClient.SendAsync(staleRange);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(bytes, await response.Content.ReadAsByteArrayAsync());
        }

        Task AssertRangeAsync(string range, int from, int to) => MediaRequests.AssertRangeAsync(bobClient, mediaId, bytes, range, from, to);
    }

    [Fact]
    public async Task A_range_in_another_unit_is_ignored_and_head_answers_the_headers_alone()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var conversation = await _server.Client(alice).CreateGroupAsync("units", bob);
        var bytes = RandomNumberGenerator.GetBytes(Chunk + 100);
        var mediaId = await UploadAsync(_server.Client(alice), conversation, bytes, "audio/mpeg");
        var bobClient = _server.Client(bob);

        // RFC 9110 14.2: a range unit the server does not know is ignored; the whole file is the answer.
        using (var items = await GetRangeAsync(bobClient, mediaId, "items=0-1"))
        {
            Assert.Equal(HttpStatusCode.OK, items.StatusCode);
            Assert.Equal(bytes, await items.Content.ReadAsByteArrayAsync());
        }

        using var head = await bobClient.SendAsync(new HttpRequestMessage(HttpMethod.Head, $"/api/v1/media/{mediaId}"));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal(bytes.Length, head.Content.Headers.ContentLength);
        Assert.Equal("audio/mpeg", head.Content.Headers.ContentType?.MediaType);
        Assert.Contains("bytes", head.Headers.AcceptRanges);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task Non_members_can_neither_upload_nor_download()
    {
        var (alice, bob, mallory) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var conversation = await _server.Client(alice).CreateGroupAsync("private", bob);
        var mediaId = await UploadAsync(_server.Client(alice), conversation, [1, 2, 3, 4], "image/jpeg");
        var outsider = _server.Client(mallory);

        await (await outsider.GetAsync($"/api/v1/media/{mediaId}")).ProblemAsync(HttpStatusCode.NotFound, "media_not_found");
        await (await _server.Client(bob).GetAsync($"/api/v1/media/{Guid.NewGuid()}")).ProblemAsync(HttpStatusCode.NotFound, "media_not_found");
        await (await outsider.PostAsync($"/api/v1/conversations/{conversation}/media", Form([9, 9], "image/png", "x.png")))
            .ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        await (await outsider.PostAsync($"/api/v1/conversations/{conversation}/messages/audio", Form([9, 9], "audio/ogg", "x.ogg")))
            .ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        // Checked before the body: even a request that is not multipart at all gets the non-member answer.
        await (await outsider.PostJsonAsync($"/api/v1/conversations/{conversation}/media", new { file = "x" }))
            .ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        await (await _server.Client().GetAsync($"/api/v1/media/{mediaId}")).ProblemAsync(HttpStatusCode.Unauthorized);

        Assert.Equal(1, await MediaRowsAsync(_server, conversation));
    }

    [Fact]
    public async Task Stored_bytes_are_ciphertext_and_tampering_is_detected()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var conversation = await _server.Client(alice).CreateGroupAsync("at rest", bob);
        var plaintext = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("PLAINTEXT-AUDIO-", 3 * Chunk / 16)));
        var mediaId = await UploadAsync(_server.Client(alice), conversation, plaintext, "audio/wav");

        var path = await StoredFileAsync(_server, mediaId);
        var stored = await File.ReadAllBytesAsync(path);
        Assert.Equal(plaintext.Length + 3 * 16, stored.Length);
        Assert.Equal(-1, stored.AsSpan().IndexOf("PLAINTEXT-AUDIO-"u8));
        Assert.Equal(-1, stored.AsSpan().IndexOf(plaintext.AsSpan(Chunk, 64)));

        var bobClient = _server.Client(bob);
        // Swapping two sealed chunks is refused: each is bound to its index.
        var swapped = stored[(Chunk + 16)..(2 * Chunk + 32)].Concat(stored[..(Chunk + 16)]).Concat(stored[(2 * Chunk + 32)..]).ToArray();
        await File.WriteAllBytesAsync(path, swapped);
        using (var response = await GetRangeAsync(bobClient, mediaId, "bytes=0-99"))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        }

        // One flipped bit in the second chunk fails that chunk only.
        var flipped = stored.ToArray();
        flipped[Chunk + 16 + 5] ^= 1;
        await File.WriteAllBytesAsync(path, flipped);
        using (var intact = await GetRangeAsync(bobClient, mediaId, "bytes=0-99"))
        {
            Assert.Equal(HttpStatusCode.PartialContent, intact.StatusCode);
            Assert.Equal(plaintext[..100], await intact.Content.ReadAsByteArrayAsync());
        }
        using (var broken = await GetRangeAsync(bobClient, mediaId, $"bytes={Chunk}-{Chunk + 99}"))
        {
            Assert.Equal(HttpStatusCode.InternalServerError, broken.StatusCode);
        }
    }

    [Fact]
    public async Task Deleting_the_message_erases_its_media()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = _server.Client(alice);
        var conversation = await client.CreateGroupAsync("erase", bob);
        var sent = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(RandomNumberGenerator.GetBytes(5000), "audio/aac", "a.aac")))
            .JsonAsync(HttpStatusCode.Created);
        var mediaId = sent.GetProperty("media").GetProperty("id").GetGuid();
        var path = await StoredFileAsync(_server, mediaId);
        Assert.True(File.Exists(path));

        var delete = await client.DeleteAsync($"/api/v1/conversations/{conversation}/messages/{sent.GetProperty("id").GetGuid()}");
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);

        await (await _server.Client(bob).GetAsync($"/api/v1/media/{mediaId}")).ProblemAsync(HttpStatusCode.NotFound, "media_not_found");
        Assert.False(File.Exists(path));
        Assert.Equal(0, await MediaRowsAsync(_server, conversation));
    }

    [Fact]
    public async Task A_client_message_id_retry_returns_the_original_and_keeps_one_file()
    {
        await using var server = await ChatServer.StartAsync();
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var conversation = await client.CreateGroupAsync("retry", bob);
        var bytes = RandomNumberGenerator.GetBytes(Chunk + 10);

        var first = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(bytes, "audio/ogg", "v.ogg", ("client_message_id", "upload-1"))))
            .JsonAsync(HttpStatusCode.Created);
        var retry = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(bytes, "audio/ogg", "v.ogg", ("client_message_id", "upload-1"))))
            .JsonAsync(HttpStatusCode.OK);

        Assert.Equal(first.GetProperty("id").GetGuid(), retry.GetProperty("id").GetGuid());
        Assert.Equal(first.GetProperty("media").GetProperty("id").GetGuid(), retry.GetProperty("media").GetProperty("id").GetGuid());
        Assert.Equal(1, await MediaRowsAsync(server, conversation));
        Assert.Equal([await StoredFileAsync(server, first.GetProperty("media").GetProperty("id").GetGuid())], MediaFiles(server));
        var page = await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages");
        Assert.Single(page.GetProperty("messages").EnumerateArray());
    }

    [Fact]
    public async Task Oversized_upload_is_refused_with_413_and_leaves_nothing_behind()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Media:MaxUploadBytes"] = "100000" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var conversation = await client.CreateGroupAsync("big", bob);

        await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(new byte[100_001], "audio/ogg", "big.ogg")))
            .ProblemAsync(HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(new byte[3_000_000], "audio/ogg", "huge.ogg")))
            .ProblemAsync(HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        Assert.Equal(0, await MediaRowsAsync(server, conversation));
        Assert.Empty(MediaFiles(server));
        Assert.Empty((await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages").EnumerateArray());

        var atLimit = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(new byte[100_000], "audio/ogg", "ok.ogg")))
            .JsonAsync(HttpStatusCode.Created);
        Assert.Equal(100_000, atLimit.GetProperty("media").GetProperty("size_bytes").GetInt64());
        Assert.Single(MediaFiles(server));
    }

    [Fact]
    public async Task Client_mistakes_are_refused_with_codes_and_leave_nothing_behind()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Messages:MaxContentBytes"] = "100" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var client = server.Client(alice);
        var conversation = await client.CreateGroupAsync("mistakes", bob);
        var url = $"/api/v1/conversations/{conversation}/media";
        var audio = RandomNumberGenerator.GetBytes(Chunk + 1);

        await (await client.PostAsync(url, Form(audio, "text/html", "page.html"))).ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await (await client.PostAsync(url, Form(audio, "application/x-msdownload", "app.exe"))).ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await (await client.PostAsync($"/api/v1/conversations/{conversation}/messages/audio", Form(audio, "image/png", "not-audio.png")))
            .ProblemAsync(HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await (await client.PostJsonAsync(url, new { file = "not multipart" })).ProblemAsync(HttpStatusCode.UnsupportedMediaType, "multipart_required");
        await (await client.PostAsync(url, Form([], "audio/ogg", "empty.ogg"))).ProblemAsync(HttpStatusCode.BadRequest, "empty_file");
        using (var noFile = new MultipartFormDataContent { { new StringContent("just words"), "caption" } })
        {
            await (await client.PostAsync(url, noFile)).ProblemAsync(HttpStatusCode.BadRequest, "file_required");
        }

        // Fields after the file part arrive once it is stored: refusing them must remove it again.
        await (await client.PostAsync(url, Form(audio, "audio/ogg", "a.ogg", ("caption", new string('x', 101)))))
            .ProblemAsync(HttpStatusCode.BadRequest, "caption_too_long");
        await (await client.PostAsync(url, Form(audio, "audio/ogg", "a.ogg", ("duration_ms", "-5"))))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_duration");
        await (await client.PostAsync(url, Form(audio, "audio/ogg", "a.ogg", ("reply_to", "nope"))))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_reply_to");
        await (await client.PostAsync(url, Form(audio, "audio/ogg", "a.ogg", ("reply_to", Guid.NewGuid().ToString()))))
            .ProblemAsync(HttpStatusCode.BadRequest, "reply_target_not_found");
        await (await client.PostAsync(url, Form(audio, "audio/ogg", "a.ogg", ("client_message_id", new string('c', 200)))))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_client_message_id");
        using (var twoFiles = Form(audio, "audio/ogg", "a.ogg"))
        {
            twoFiles.Add(new ByteArrayContent(audio) { Headers = { ContentType = new MediaTypeHeaderValue("audio/ogg") } }, "file", "b.ogg");
            await (await client.PostAsync(url, twoFiles)).ProblemAsync(HttpStatusCode.BadRequest, "duplicate_field");
        }
        using (var truncated = new ByteArrayContent(Encoding.ASCII.GetBytes(
            "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.ogg\"\r\nContent-Type: audio/ogg\r\n\r\n" + new string('z', 70_000))))
        {
            truncated.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=b");
            await (await client.PostAsync(url, truncated)).ProblemAsync(HttpStatusCode.BadRequest, "malformed_multipart");
        }

        Assert.Equal(0, await MediaRowsAsync(server, conversation));
        Assert.Empty(MediaFiles(server));
        Assert.Empty((await client.GetJsonAsync($"/api/v1/conversations/{conversation}/messages")).GetProperty("messages").EnumerateArray());
    }

    private static async Task<Guid> UploadAsync(HttpClient client, Guid conversation, byte[] bytes, string contentType)
    {
        var sent = await (await client.PostAsync($"/api/v1/conversations/{conversation}/media", Form(bytes, contentType, "upload.bin")))
            .JsonAsync(HttpStatusCode.Created);
        return sent.GetProperty("media").GetProperty("id").GetGuid();
    }

    private static async Task<long> MediaRowsAsync(ChatServer server, Guid conversationId)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return await connection.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM media WHERE conversation_id = @conversationId", new { conversationId });
    }

    private static async Task<string> StoredFileAsync(ChatServer server, Guid mediaId)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        var key = await connection.ExecuteScalarAsync<string>("SELECT storage_key FROM media WHERE id = @mediaId", new { mediaId });
        return Path.GetFullPath(Path.Combine(server.DataDirectory, "media", key!));
    }

    private static List<string> MediaFiles(ChatServer server)
    {
        var directory = Path.Combine(server.DataDirectory, "media");
        return Directory.Exists(directory) ? [.. Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories).Select(Path.GetFullPath)] : [];
    }
}
