using System.Net;
using System.Security.Cryptography;
using System.Text;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Storage;

public sealed class EncryptionTests
{
    private static string NewKey() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32));

    private static async Task<byte[]> StoredContentAsync(ChatServer server, Guid messageId)
    {
        await using var connection = await server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return await connection.QuerySingleAsync<byte[]>("SELECT content FROM messages WHERE id = @messageId", new { messageId });
    }

    [Fact]
    public async Task Content_is_ciphertext_in_the_table_and_plaintext_over_the_api()
    {
        await using var server = await ChatServer.StartAsync();
        var alice = Guid.NewGuid();
        var client = server.Client(alice);
        var id = await client.CreateGroupAsync("secret club");
        const string plaintext = "the eagle lands at midnight";
        var messageId = (await client.SendAsync(id, plaintext)).GetProperty("id").GetGuid();

        var stored = await StoredContentAsync(server, messageId);
        Assert.DoesNotContain(plaintext, Encoding.UTF8.GetString(stored));
        Assert.True(stored.Length >= plaintext.Length + 28, "ciphertext carries nonce and tag");
        Assert.Equal(plaintext, (await client.GetJsonAsync($"/api/v1/conversations/{id}/messages/{messageId}")).GetProperty("content").GetString());
    }

    [Fact]
    public async Task Without_configured_keys_one_is_generated_owner_only_and_reused()
    {
        await using var first = await ChatServer.StartAsync();
        var keyFile = Path.Combine(first.DataDirectory, "encryption-keys.json");
        Assert.True(File.Exists(keyFile));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));
        }
        var alice = Guid.NewGuid();
        var id = await first.Client(alice).CreateGroupAsync("persisted");
        await first.Client(alice).SendAsync(id, "still readable after restart");
        var generated = await File.ReadAllTextAsync(keyFile);
        await first.StopAsync();

        await using var second = await ChatServer.StartAsync(reuse: first);
        Assert.Equal(generated, await File.ReadAllTextAsync(keyFile));
        var history = await second.Client(alice).GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Equal("still readable after restart", history.GetProperty("messages")[0].GetProperty("content").GetString());
    }

    [Fact]
    public async Task A_second_instance_that_generated_its_own_key_refuses_to_start_on_the_same_database()
    {
        // A rolling update whose new pod has neither the old pod's data volume nor a configured key: on the same day it
        // generated a key of the same id, passed the check, and neither could read what the other wrote.
        await using var first = await ChatServer.StartAsync();
        var alice = Guid.NewGuid();
        await first.Client(alice).SendAsync(await first.Client(alice).CreateGroupAsync("one key"), "written with the first key");
        var otherDataDirectory = Directory.CreateTempSubdirectory("chat-test-").FullName;
        try
        {
            var settings = new Dictionary<string, string?> { ["Storage:DataDirectory"] = otherDataDirectory };
            if (first.Settings["Database:Provider"] == "Sqlite")
            {
                // The same database file, which is otherwise in the data directory.
                settings["Database:ConnectionString"] = $"Data Source={Path.Combine(first.DataDirectory, "chat.db")}";
            }
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => ChatServer.StartAsync(settings, reuse: first));
            Assert.Contains("Encryption:Keys", refused.Message);
        }
        finally
        {
            Directory.Delete(otherDataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task Rotation_keeps_old_messages_readable_and_refuses_to_start_without_a_used_key()
    {
        var (key1, key2) = (NewKey(), NewKey());
        var alice = Guid.NewGuid();
        await using var first = await ChatServer.StartAsync(new() { ["Encryption:Keys:k1"] = key1 });
        var id = await first.Client(alice).CreateGroupAsync("rotating");
        var old = (await first.Client(alice).SendAsync(id, "written under k1")).GetProperty("id").GetGuid();
        await first.StopAsync();

        await using (var rotated = await ChatServer.StartAsync(
            new() { ["Encryption:Keys:k1"] = key1, ["Encryption:Keys:k2"] = key2, ["Encryption:ActiveKeyId"] = "k2" }, reuse: first))
        {
            var fresh = (await rotated.Client(alice).SendAsync(id, "written under k2")).GetProperty("id").GetGuid();
            var history = await rotated.Client(alice).GetJsonAsync($"/api/v1/conversations/{id}/messages");
            Assert.Equal(["written under k1", "written under k2"], history.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));
            Assert.Equal("k1", KeyIdOf(await StoredContentAsync(rotated, old)));
            Assert.Equal("k2", KeyIdOf(await StoredContentAsync(rotated, fresh)));
            await rotated.StopAsync();
        }

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            ChatServer.StartAsync(new() { ["Encryption:Keys:k2"] = key2 }, reuse: first));
        Assert.Contains("'k1'", refused.Message);
        Assert.DoesNotContain(key1, refused.Message);
    }

    [Fact]
    public async Task Ciphertext_moved_to_another_row_does_not_decrypt()
    {
        await using var server = await ChatServer.StartAsync();
        var alice = Guid.NewGuid();
        var id = await server.Client(alice).CreateGroupAsync("bound");
        var first = (await server.Client(alice).SendAsync(id, "first")).GetProperty("id").GetGuid();
        var second = (await server.Client(alice).SendAsync(id, "second")).GetProperty("id").GetGuid();
        var cipher = server.Services.GetRequiredService<ContentCipher>();

        var stolen = await StoredContentAsync(server, first);
        Assert.Equal("first", cipher.DecryptText(stolen, first));
        Assert.ThrowsAny<CryptographicException>(() => cipher.DecryptText(stolen, second));
    }

    private static string KeyIdOf(byte[] ciphertext) => Encoding.UTF8.GetString(ciphertext, 2, ciphertext[1]);
}
