using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

/// <summary>Configuration mistakes at start-up: one line each on stderr, naming the setting to change, and a failed exit.</summary>
public sealed class StartupErrorTests
{
    [Fact]
    public async Task A_port_in_use_is_one_line_naming_urls()
    {
        using var occupant = Ports.Occupy(out var port);

        var line = await FailingStartAsync(await ServiceProcess.StartAsync($"--urls=http://127.0.0.1:{port}"));
        Assert.Contains($"127.0.0.1:{port}", line);
        Assert.Contains("`urls`", line);
        Assert.Contains("in use", line);
    }

    [Fact]
    public async Task An_unreachable_database_is_one_line_naming_the_connection_string()
    {
        var dataDirectory = Directory.CreateTempSubdirectory("chat-startup-").FullName;
        try
        {
            // A port nothing listens on.
            var port = Ports.Free();
            var line = await FailingStartAsync(ServiceProcess.Start(
            [
                "--urls=http://127.0.0.1:0", $"--Storage:DataDirectory={dataDirectory}", $"--Auth:SigningKey={ChatServer.SigningKey}",
                "--Database:Provider=Postgres", $"--Database:ConnectionString=Host=127.0.0.1;Port={port};Username=chat;Timeout=5",
            ], workingDirectory: dataDirectory));
            Assert.Contains("Database:ConnectionString", line);
            Assert.Contains($"127.0.0.1:{port}", line);
        }
        finally
        {
            Directory.Delete(dataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task A_missing_signing_key_file_is_one_line_naming_the_setting()
    {
        var line = await FailingStartAsync(await ServiceProcess.StartAsync("--urls=http://127.0.0.1:0", "--Auth:SigningKeyFile=/nonexistent/jwt.key"));
        Assert.StartsWith("Auth:SigningKeyFile", line);
        Assert.Contains("/nonexistent/jwt.key", line);
    }

    [Fact]
    public async Task A_profile_cache_lifetime_of_zero_is_one_line_naming_the_setting()
    {
        var line = await FailingStartAsync(await ServiceProcess.StartAsync("--urls=http://127.0.0.1:0", "--Auth:ProfileCacheLifetime=00:00:00"));
        Assert.Contains("Auth:ProfileCacheLifetime", line);
    }

    [Fact]
    public async Task An_unreadable_content_keys_file_is_one_line_naming_the_setting()
    {
        var keys = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(keys, "{\"active_key_id\": \"k1\", \"keys\": {");
            var line = await FailingStartAsync(await ServiceProcess.StartAsync("--urls=http://127.0.0.1:0", $"--Encryption:KeysFile={keys}"));
            Assert.StartsWith("Encryption:KeysFile", line);
            Assert.Contains(keys, line);
        }
        finally
        {
            File.Delete(keys);
        }
    }

    private static async Task<string> FailingStartAsync(ServiceProcess service)
    {
        await using (service)
        {
            var exitCode = await service.WaitForExitAsync(TimeSpan.FromSeconds(60));
            // Output events may trail the exit slightly.
            await Task.Delay(200);
            Assert.True(exitCode != 0, "The service started although it should not have.");
            var error = Assert.Single(service.ErrorLines, l => l.Length > 0);
            Assert.DoesNotContain(service.Lines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal));
            Assert.DoesNotContain(service.Lines, l => l.Contains("fail: ", StringComparison.Ordinal) || l.Contains("crit: ", StringComparison.Ordinal));
            return error;
        }
    }
}
