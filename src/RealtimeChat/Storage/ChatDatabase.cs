using System.Data;
using System.Data.Common;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;
using Npgsql;

namespace RealtimeChat.Storage;

/// <summary>
/// Opens connections for the configured dialect and serialises writers: SQLite allows one writer at a time,
/// and on PostgreSQL writes to one conversation are ordered so live events leave in sequence order.
/// </summary>
public sealed class ChatDatabase : IAsyncDisposable
{
    private const int ConversationLockStripes = 1024;

    private readonly NpgsqlDataSource? _postgres;
    private readonly string? _sqliteConnectionString;
    private readonly SemaphoreSlim[] _writeLocks;

    public ChatDatabase(IOptions<DatabaseOptions> options, IOptions<StorageOptions> storage)
    {
        var db = options.Value;
        Provider = db.Provider;
        if (Provider == DatabaseProvider.Postgres)
        {
            _postgres = NpgsqlDataSource.Create(PostgresConnectionString(db.ConnectionString!));
            _writeLocks = Enumerable.Range(0, ConversationLockStripes).Select(_ => new SemaphoreSlim(1, 1)).ToArray();
        }
        else
        {
            _sqliteConnectionString = SqliteConnectionString(db, storage.Value);
            _writeLocks = [new SemaphoreSlim(1, 1)];
        }
    }

    public DatabaseProvider Provider { get; }

    public string MigrationConnectionString => _sqliteConnectionString ?? _postgres!.ConnectionString;

    public async Task<DbConnection> OpenAsync(CancellationToken cancellationToken = default)
    {
        if (_postgres is not null)
        {
            return await _postgres.OpenConnectionAsync(cancellationToken);
        }

        var connection = new SqliteConnection(_sqliteConnectionString);
        await connection.OpenAsync(cancellationToken);
        // WAL with NORMAL sync survives a crash of this process; only an OS crash can lose the last commits.
        await using var pragma = connection.CreateCommand();
        pragma.CommandText = "PRAGMA synchronous = NORMAL;";
        await pragma.ExecuteNonQueryAsync(cancellationToken);
        return connection;
    }

    /// <summary>Starts a write transaction for one conversation; events appended to it are published on commit.</summary>
    public Task<ChatTransaction> BeginWriteAsync(
        Guid conversationId, ChatEventPipeline pipeline, CancellationToken cancellationToken, EventOrigin origin = default) =>
        BeginWriteAsync([conversationId], pipeline, cancellationToken, origin);

    /// <summary>
    /// Starts one write transaction for several conversations (group commit). Their gates are taken in one global
    /// order, so writers that hold several never wait on each other in a cycle.
    /// </summary>
    public async Task<ChatTransaction> BeginWriteAsync(
        IReadOnlyCollection<Guid> conversationIds, ChatEventPipeline pipeline, CancellationToken cancellationToken, EventOrigin origin = default)
    {
        var gates = conversationIds
            .Select(id => (int)((uint)id.GetHashCode() % (uint)_writeLocks.Length))
            .Distinct()
            .Order()
            .Select(stripe => _writeLocks[stripe])
            .ToArray();
        var held = 0;
        DbConnection? connection = null;
        try
        {
            for (; held < gates.Length; held++)
            {
                await gates[held].WaitAsync(cancellationToken);
            }
            connection = await OpenAsync(cancellationToken);
            var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken);
            return new ChatTransaction(connection, transaction, gates, pipeline, origin);
        }
        catch
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
            for (var i = 0; i < held; i++)
            {
                gates[i].Release();
            }
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_postgres is not null)
        {
            await _postgres.DisposeAsync();
        }
    }

    /// <summary>
    /// Every request runs the same few statements: let Npgsql prepare them once per connection, and keep them
    /// prepared across pool returns. Settings in the configured connection string win.
    /// </summary>
    private static string PostgresConnectionString(string configured)
    {
        var builder = new NpgsqlConnectionStringBuilder(configured);
        if (!configured.Contains("Max Auto Prepare", StringComparison.OrdinalIgnoreCase))
        {
            builder.MaxAutoPrepare = 64;
            builder.AutoPrepareMinUsages = 2;
        }
        if (!configured.Contains("No Reset On Close", StringComparison.OrdinalIgnoreCase))
        {
            builder.NoResetOnClose = true;
        }
        return builder.ConnectionString;
    }

    private static string SqliteConnectionString(DatabaseOptions db, StorageOptions storage)
    {
        var builder = new SqliteConnectionStringBuilder(
            db.ConnectionString ?? $"Data Source={Path.Combine(storage.DataDirectory, "chat.db")}")
        {
            ForeignKeys = true,
            Pooling = true,
            DefaultTimeout = 30,
        };
        var directory = Path.GetDirectoryName(Path.GetFullPath(builder.DataSource));
        if (directory is not null)
        {
            Infrastructure.StartupErrors.CreateDirectory(directory, db.ConnectionString is null ? "Storage:DataDirectory" : "Database:ConnectionString");
        }
        return builder.ToString();
    }
}
