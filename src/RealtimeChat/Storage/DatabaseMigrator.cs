using System.Reflection;
using DbUp;
using DbUp.Engine;
using DbUp.Engine.Output;

namespace RealtimeChat.Storage;

/// <summary>Applies the versioned <c>.sql</c> files of the configured dialect (embedded under Storage/Migrations).</summary>
public sealed class DatabaseMigrator(ChatDatabase database, ILogger<DatabaseMigrator> logger)
{
    public void Migrate()
    {
        var folder = database.Provider == DatabaseProvider.Postgres ? "postgres" : "sqlite";
        var prefix = $"{typeof(DatabaseMigrator).Namespace}.Migrations.{folder}.";
        var builder = database.Provider == DatabaseProvider.Postgres
            ? DeployChanges.To.PostgresqlDatabase(database.MigrationConnectionString)
            : DeployChanges.To.SqliteDatabase(database.MigrationConnectionString);

        var upgrader = builder
            .WithScriptsEmbeddedInAssembly(Assembly.GetExecutingAssembly(), name => name.StartsWith(prefix, StringComparison.Ordinal))
            // One transaction for all pending scripts: an instance of the previous version, still serving during a
            // rolling update, sees the schema before the upgrade or after it, never between two scripts.
            .WithTransaction()
            .LogTo(new DbUpLog(logger))
            .Build();

        var result = upgrader.PerformUpgrade();
        if (!result.Successful)
        {
            throw new InvalidOperationException($"Database migration failed at {result.ErrorScript?.Name}.", result.Error);
        }

        if (database.Provider == DatabaseProvider.Sqlite)
        {
            using var connection = new Microsoft.Data.Sqlite.SqliteConnection(database.MigrationConnectionString);
            connection.Open();
            using var command = connection.CreateCommand();
            // Persistent per database file: readers never block the writer.
            command.CommandText = "PRAGMA journal_mode = WAL;";
            command.ExecuteNonQuery();
        }
    }

    private sealed class DbUpLog(ILogger logger) : IUpgradeLog
    {
        public void LogTrace(string format, params object[] args) => logger.LogTrace(format, args);
        public void LogDebug(string format, params object[] args) => logger.LogDebug(format, args);
        public void LogInformation(string format, params object[] args) => logger.LogInformation(format, args);
        public void LogWarning(string format, params object[] args) => logger.LogWarning(format, args);
        public void LogError(string format, params object[] args) => logger.LogError(format, args);
        // DbUp formats the whole exception, stack trace included, into its message; Migrate throws it with the
        // failing script, and start-up prints that as one line.
        public void LogError(Exception ex, string format, params object[] args) => logger.LogDebug(ex, "Migration failed");
    }
}
