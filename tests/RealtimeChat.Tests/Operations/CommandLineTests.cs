using System.Diagnostics;
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
            Assert.Equal(0, await connection.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM messages WHERE matrix_event_id IS NOT NULL"));
        }
        finally
        {
            await drop();
        }
    }

    private static async Task<(int ExitCode, string Output, string Error)> RunAsync(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(typeof(ChatApp).Assembly.Location);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await output, await error);
    }
}
