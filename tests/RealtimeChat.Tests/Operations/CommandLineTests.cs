using System.Net;
using Dapper;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Operations;

/// <summary>The commands the README gives, run as real processes.</summary>
public sealed class CommandLineTests
{
    [Fact]
    public async Task Token_command_mints_a_token_the_server_accepts_with_the_generated_dev_key()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null });
        var user = Guid.NewGuid();

        var (exitCode, output, error) = await RunAsync("token", "--user", user.ToString(), $"--Storage:DataDirectory={server.DataDirectory}");

        Assert.True(exitCode == 0, error);
        var client = server.Client();
        client.DefaultRequestHeaders.Authorization = new("Bearer", output.Trim());
        var me = await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "minted" });
        var created = await me.JsonAsync(HttpStatusCode.Created);
        Assert.Equal(user, created.GetProperty("created_by").GetGuid());
    }

    [Fact]
    public async Task Token_command_requires_a_uuid()
    {
        var (exitCode, _, _) = await RunAsync("token", "--user", "alice");
        Assert.NotEqual(0, exitCode);
    }

    [Theory]
    [InlineData("Auth:ProfileCacheLifetime", "token", "--user", "9b2f0c1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "--Auth:ProfileCacheLifetime=abc")]
    [InlineData("Matrix:MaxAttempts", "registration", "--Matrix:ServerName=example.org", "--Matrix:MaxAttempts=abc")]
    [InlineData("Database:Provider", "matrix", "retry", "--Database:Provider=Oracle")]
    public async Task A_command_given_a_setting_it_cannot_read_says_so_in_one_line(string key, params string[] args)
    {
        var dataDirectory = Directory.CreateTempSubdirectory("chat-command-").FullName;
        try
        {
            var (exitCode, _, error) = await RunAsync([.. args, $"--Storage:DataDirectory={dataDirectory}"]);
            Assert.Equal(1, exitCode);
            var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Assert.Contains(key, line);
        }
        finally
        {
            Directory.Delete(dataDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task Migrate_command_creates_the_schema_and_exits()
    {
        var dataDirectory = Directory.CreateTempSubdirectory("chat-migrate-").FullName;
        var (settings, drop) = await TestDatabase.CreateAsync(dataDirectory);
        try
        {
            var args = new List<string> { "migrate", $"--Storage:DataDirectory={dataDirectory}" };
            args.AddRange(settings.Select(s => $"--{s.Key}={s.Value}"));
            var (exitCode, _, error) = await RunAsync([.. args]);
            Assert.True(exitCode == 0, error);

            await using var server = await ChatServer.StartAsync(new(settings) { ["Storage:DataDirectory"] = dataDirectory, ["Database:MigrateOnStartup"] = "false" });
            var database = (RealtimeChat.Storage.ChatDatabase)server.Services.GetService(typeof(RealtimeChat.Storage.ChatDatabase))!;
            await using var connection = await database.OpenAsync();
            Assert.Equal(0, await connection.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM matrix_room_mapping"));
            Assert.Equal(0, await connection.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM matrix_events"));
        }
        finally
        {
            await drop();
        }
    }

    [Fact]
    public async Task Registration_command_prints_what_synapse_was_given_in_the_golden_recording()
    {
        var (exitCode, output, error) = await RunAsync(
            "registration", "--Matrix:Enabled=true", "--Matrix:HomeserverUrl=http://127.0.0.1:8008", "--Matrix:ServerName=localhost",
            "--Matrix:AppserviceUrl=http://127.0.0.1:9009", "--Matrix:AsToken=as_token_test_0123456789", "--Matrix:HsToken=hs_token_test_0123456789");
        Assert.True(exitCode == 0, error);

        var yaml = new YamlDotNet.Serialization.DeserializerBuilder().Build();
        var printed = yaml.Deserialize<Dictionary<string, object>>(output);
        var golden = yaml.Deserialize<Dictionary<string, object>>(await File.ReadAllTextAsync(Path.Combine(GoldenDirectory(), "registration-used.yaml")));
        foreach (var key in new[] { "id", "url", "as_token", "hs_token", "sender_localpart", "rate_limited" })
        {
            Assert.Equal(golden[key]?.ToString(), printed[key]?.ToString());
        }
        var namespaces = (Dictionary<object, object>)printed["namespaces"];
        var users = (List<object>)namespaces["users"];
        var userNamespace = (Dictionary<object, object>)users[0];
        Assert.Equal("true", userNamespace["exclusive"].ToString());
        Assert.Matches((string)userNamespace["regex"], $"@nova_{Guid.NewGuid():N}:localhost");
        Assert.DoesNotMatch((string)userNamespace["regex"], "@mallory:localhost");
    }

    [Fact]
    public async Task Registration_command_generates_tokens_even_with_matrix_enabled_and_no_tokens()
    {
        var (exitCode, output, error) = await RunAsync("registration", "--Matrix:Enabled=true", "--Matrix:ServerName=example.org",
            "--Matrix:HomeserverUrl=http://synapse:8008");
        Assert.True(exitCode == 0, error);
        Assert.Matches("hs_token: [0-9a-f]{64}", output);
        Assert.Contains("generated", error);
    }

    [Fact]
    public async Task Registration_command_generates_tokens_when_none_are_configured_and_says_so()
    {
        var (exitCode, output, error) = await RunAsync("registration", "--Matrix:ServerName=example.org");
        Assert.True(exitCode == 0, error);
        Assert.Matches("as_token: [0-9a-f]{64}", output);
        Assert.Contains("generated", error);
    }

    private static string GoldenDirectory()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !Directory.Exists(Path.Combine(directory.FullName, "tests", "golden", "matrix")))
        {
            directory = directory.Parent;
        }
        return Path.Combine(directory?.FullName ?? throw new DirectoryNotFoundException("tests/golden/matrix"), "tests", "golden", "matrix");
    }

    private static Task<(int ExitCode, string Output, string Error)> RunAsync(params string[] args) => Commands.RunAsync(args);
}
