using Npgsql;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>
/// Which database the suite runs on: <c>CHAT_TEST_DATABASE=sqlite</c> (default) or <c>postgres</c> with
/// <c>CHAT_TEST_POSTGRES</c> naming a server where each test server gets a database of its own.
/// <c>scripts/test.sh</c> runs the suite once for each.
/// </summary>
public static class TestDatabase
{
    public static bool IsPostgres =>
        string.Equals(Environment.GetEnvironmentVariable("CHAT_TEST_DATABASE"), "postgres", StringComparison.OrdinalIgnoreCase);

    private static string AdminConnectionString =>
        Environment.GetEnvironmentVariable("CHAT_TEST_POSTGRES")
        ?? throw new InvalidOperationException("CHAT_TEST_DATABASE=postgres needs CHAT_TEST_POSTGRES (a connection string to a server).");

    /// <returns>Configuration for a fresh, empty database, and how to remove it afterwards.</returns>
    public static async Task<(Dictionary<string, string?> Settings, Func<Task> Drop)> CreateAsync(string dataDirectory)
    {
        if (!IsPostgres)
        {
            return (new Dictionary<string, string?> { ["Database:Provider"] = "Sqlite" }, () => Task.CompletedTask);
        }

        var name = $"chat_test_{Guid.NewGuid():N}";
        await using (var admin = new NpgsqlConnection(AdminConnectionString))
        {
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {name}", admin);
            await create.ExecuteNonQueryAsync();
        }
        var connectionString = new NpgsqlConnectionStringBuilder(AdminConnectionString) { Database = name }.ConnectionString;
        return (
            new Dictionary<string, string?> { ["Database:Provider"] = "Postgres", ["Database:ConnectionString"] = connectionString },
            async () =>
            {
                NpgsqlConnection.ClearAllPools();
                await using var admin = new NpgsqlConnection(AdminConnectionString);
                await admin.OpenAsync();
                await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", admin);
                await drop.ExecuteNonQueryAsync();
            });
    }
}
