namespace RealtimeChat.Tests.Infrastructure;

/// <summary>
/// A database and data directory (dropped and deleted at the end) for services run as processes on them, one after
/// another or side by side, and the settings each of them starts with.
/// </summary>
public sealed class ProcessDeployment : IAsyncDisposable
{
    private readonly Func<Task> _drop;

    private ProcessDeployment(string dataDirectory, Dictionary<string, string?> database, List<string> settings, Func<Task> drop)
    {
        DataDirectory = dataDirectory;
        Database = database;
        Settings = settings;
        _drop = drop;
    }

    public string DataDirectory { get; }

    /// <summary>The database's own settings (<c>Database:Provider</c>, and <c>Database:ConnectionString</c> on PostgreSQL).</summary>
    public IReadOnlyDictionary<string, string?> Database { get; }

    public List<string> Settings { get; }

    public static async Task<ProcessDeployment> CreateAsync(params string[] extraSettings)
    {
        var directory = Directory.CreateTempSubdirectory("chat-deployment-").FullName;
        var (database, drop) = await TestDatabase.CreateAsync(directory);
        var settings = database.Select(s => $"--{s.Key}={s.Value}")
            .Append($"--Storage:DataDirectory={directory}").Append($"--Auth:SigningKey={ChatServer.SigningKey}")
            .Concat(extraSettings).ToList();
        return new ProcessDeployment(directory, database, settings, drop);
    }

    /// <summary>Bridging to an emulated homeserver in appservice mode, with retries and polls in milliseconds.</summary>
    public static string[] MatrixSettings(MatrixEmulator.HomeserverEmulator homeserver, TimeSpan portalLease)
    {
        var registration = homeserver.Options.Appservice!;
        return
        [
            "--Matrix:Enabled=true", "--Matrix:Mode=Appservice", $"--Matrix:HomeserverUrl={homeserver.BaseUrl}",
            $"--Matrix:ServerName={homeserver.ServerName}", $"--Matrix:AsToken={registration.AsToken}", $"--Matrix:HsToken={registration.HsToken}",
            "--Matrix:PollInterval=00:00:00.100", "--Matrix:MinRetryDelay=00:00:00.050", "--Matrix:MaxRetryDelay=00:00:01",
            $"--Matrix:PortalLease={portalLease:c}",
        ];
    }

    public async ValueTask DisposeAsync()
    {
        await _drop();
        Directory.Delete(DataDirectory, recursive: true);
    }
}
