using RealtimeChat.Infrastructure;
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

    // The mistakes a QA probe made: each had printed the framework's exception with its stack trace.
    [Theory]
    [InlineData("RateLimits:Edits:PerSecond", "'abc' is not a number", "--RateLimits:Edits:PerSecond=abc")]
    [InlineData("Realtime:MaxConnectionsPerUser", "'abc' is not a whole number", "--Realtime:MaxConnectionsPerUser=abc")]
    [InlineData("RateLimits:RejectionDelay", "'xyz' is not a duration", "--RateLimits:RejectionDelay=xyz")]
    [InlineData("Database:Provider", "'Oracle' is not one of Sqlite, Postgres", "--Database:Provider=Oracle")]
    [InlineData("Media:Provider", "'Foo' is not one of Local, S3", "--Media:Provider=Foo")]
    [InlineData("Logging:Requests", "'maybe' is not true or false", "--Logging:Requests=maybe")]
    [InlineData("Database:MigrateOnStartup", "'maybe' is not true or false", "--Database:MigrateOnStartup=maybe")]
    [InlineData("`urls`", "'garbage'", "--urls=garbage")]
    [InlineData("Storage:DataDirectory", "'/proc/qa9'", "--Storage:DataDirectory=/proc/qa9")]
    [InlineData("Database:ConnectionString", "'bogus'", "--Database:Provider=Postgres", "--Database:ConnectionString=Host=127.0.0.1;Bogus=1")]
    public async Task A_setting_that_cannot_be_used_is_one_line_naming_it(string setting, string problem, params string[] arguments)
    {
        var line = await FailingStartAsync(await ServiceProcess.StartAsync(WithUrls(arguments)));
        Assert.Contains(setting, line);
        Assert.Contains(problem, line);
    }

    [Theory]
    [InlineData("Realtime:MaxConnectionsPerUser must be between 1 and 100000", "--Realtime:MaxConnectionsPerUser=0")]
    [InlineData("Media:MaxUploadBytes must be between 1 and", "--Media:MaxUploadBytes=0")]
    [InlineData("Messages:SendsPerSecond must be between 0.001 and", "--Messages:SendsPerSecond=0")]
    public async Task A_value_out_of_range_is_one_line_naming_the_full_key(string expected, string argument)
    {
        var line = await FailingStartAsync(await ServiceProcess.StartAsync(WithUrls([argument])));
        Assert.Contains(expected, line);
    }

    [Fact]
    public void A_failure_that_is_a_bug_keeps_its_full_exception()
    {
        Assert.Null(StartupErrors.Describe(new NullReferenceException()));
        Assert.Null(StartupErrors.Describe(new InvalidOperationException("Sequence contains no elements")));
        Assert.Null(StartupErrors.Describe(new FormatException("Invalid url: 'garbage'")));
        Assert.Null(StartupErrors.Describe(new ArgumentException("Couldn't set bogus", "bogus")));
        Assert.Null(StartupErrors.Describe(new IOException("Could not find file '/proc/qa9'.")));
    }

    private static string[] WithUrls(string[] arguments) =>
        arguments.Any(a => a.StartsWith("--urls=", StringComparison.Ordinal)) ? arguments : ["--urls=http://127.0.0.1:0", .. arguments];

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
