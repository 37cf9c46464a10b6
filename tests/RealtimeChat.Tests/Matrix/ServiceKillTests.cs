using System.Data.Common;
using Dapper;
using MatrixEmulator;
using Microsoft.Data.Sqlite;
using Npgsql;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>The service as its own process, killed (<c>kill -9</c>) while its portals have sent more than they recorded.</summary>
public sealed class ServiceKillTests
{
    [Fact]
    public async Task Killed_with_many_sends_unrecorded_and_the_homeserver_restarted_a_burst_reaches_the_room_once_each_in_order()
    {
        var port = Ports.Free();
        await using var homeserver = await HomeserverEmulator.StartAsync(new EmulatorOptions
        {
            Appservice = AppserviceRegistration.NovaChat(new Uri($"http://127.0.0.1:{port}")),
            TimeScale = 0.01,
        });
        // The lock below blocks lease writes too, and a drain takes its lease without writing only within a third of the
        // lease of the last renewal (the first failure of the outage): 10 s covers storing the burst on a loaded machine,
        // where 4 s (a 12 s lease) did not. The new process waits out the rest of it after the kill.
        await using var deployment = await ProcessDeployment.CreateAsync(
            [$"--urls=http://127.0.0.1:{port}", "--Messages:SendsPerSecond=1000", "--Messages:SendBurst=1000",
             .. ProcessDeployment.MatrixSettings(homeserver, TimeSpan.FromSeconds(30))]);
        var (directory, settings) = (deployment.DataDirectory, deployment.Settings);
        var alice = Guid.NewGuid();
        await using var first = ServiceProcess.Start(settings, directory);
        var api = ServiceProcess.Client(await first.WaitListeningAsync(), alice);
        var conversation = await api.CreateGroupAsync("killed mid-burst", Guid.NewGuid());
        var alias = $"#nova_{conversation:N}:{homeserver.ServerName}";
        List<string?> Bodies() => homeserver.ResolveAlias(alias) is { } room
            ? [.. homeserver.Timeline(room).Where(e => e.Type == "m.room.message").Select(e => (string?)e.OriginalContent["body"])]
            : [];
        List<string> expected = ["before", .. Enumerable.Range(0, 60).Select(i => $"burst {i}")];
        await api.SendAsync(conversation, expected[0]);
        await Eventually.Async(() => Bodies().Count == 1, "the room with its first message", TimeSpan.FromSeconds(30));

        // The burst is stored while the homeserver is down; then every recording waits on a lock, and when the
        // homeserver answers again the portal sends on (recording in the background) until it must record.
        using var down = homeserver.Faults.Inject(Fault.Down());
        foreach (var body in expected.Skip(1))
        {
            await api.SendAsync(conversation, body);
        }
        // The portal records the outage's first failure, then waits for the homeserver without writing: a lock taken
        // before that recording would keep it from ever sending again.
        await using (var connection = await OpenAsync(deployment.Database, directory))
        {
            await Eventually.Async(async () => await connection.ExecuteScalarAsync<long>(
                "SELECT COUNT(*) FROM matrix_outbox WHERE action = 'send_message' AND status = 'pending' AND last_error IS NOT NULL") > 0,
                "the outage's first failure recorded", TimeSpan.FromSeconds(30));
        }
        await using var recordingBlocker = await BlockRecordingAsync(deployment.Database, directory);
        down.Dispose();
        await Eventually.Async(() => Bodies().Count > 1, "sending to resume", TimeSpan.FromSeconds(30));
        var stalled = 0;
        for (var seen = -1; stalled < 5;)
        {
            await Task.Delay(200);
            var now = Bodies().Count;
            stalled = now == seen ? stalled + 1 : 0;
            seen = now;
        }
        var recorded = await recordingBlocker.Connection.ExecuteScalarAsync<long>(
            "SELECT COUNT(*) FROM matrix_outbox WHERE action = 'send_message' AND status = 'sent'", transaction: recordingBlocker.Transaction);
        var unrecorded = Bodies().Count - recorded;
        Assert.True(unrecorded >= 16, $"only {unrecorded} sent but unrecorded when killed ({Bodies().Count} in the room)");

        first.Process.Kill(entireProcessTree: true);
        await first.WaitForExitAsync(TimeSpan.FromSeconds(10));
        await recordingBlocker.DisposeAsync();
        // Synapse forgets every transaction id when it restarts: only finding the events keeps them from a second post.
        await homeserver.RestartAsync(TimeSpan.FromMilliseconds(200));

        await using var second = ServiceProcess.Start(settings, directory);
        await second.WaitListeningAsync();
        await Eventually.SettledAsync(() => Bodies().Count, expected.Count, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(1));
        Assert.True(expected.SequenceEqual(Bodies()),
            $"{unrecorded} unrecorded at the kill; room ({Bodies().Count}): {string.Join(" | ", Bodies())}\n--- after the restart:\n{string.Join('\n', second.Lines.TakeLast(30))}");
    }

    /// <summary>Holds a lock that every recording of a portal waits on, until disposed.</summary>
    private static async Task<Blocker> BlockRecordingAsync(IReadOnlyDictionary<string, string?> database, string directory)
    {
        var connection = await OpenAsync(database, directory);
        // PostgreSQL: recording renews the portal's lease first, which this lock blocks. SQLite: a pending write lock.
        var transaction = TestDatabase.IsPostgres
            ? await connection.BeginTransactionAsync()
            : ((SqliteConnection)connection).BeginTransaction(deferred: false);
        if (TestDatabase.IsPostgres)
        {
            await connection.ExecuteAsync("LOCK TABLE matrix_portal_leases IN EXCLUSIVE MODE", transaction: transaction);
        }
        return new Blocker(connection, transaction);
    }

    private static async Task<DbConnection> OpenAsync(IReadOnlyDictionary<string, string?> database, string directory)
    {
        DbConnection connection = TestDatabase.IsPostgres
            ? new NpgsqlConnection(database["Database:ConnectionString"])
            : new SqliteConnection($"Data Source={Path.Combine(directory, "chat.db")}");
        await connection.OpenAsync();
        return connection;
    }

    private sealed class Blocker(DbConnection connection, DbTransaction transaction) : IAsyncDisposable
    {
        public DbConnection Connection => connection;

        public DbTransaction Transaction => transaction;

        public async ValueTask DisposeAsync()
        {
            await transaction.DisposeAsync();
            await connection.DisposeAsync();
        }
    }
}
