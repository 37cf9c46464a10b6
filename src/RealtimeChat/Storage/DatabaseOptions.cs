using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Storage;

public enum DatabaseProvider
{
    Sqlite,
    Postgres,
}

public sealed class StorageOptions
{
    public const string Section = "Storage";

    /// <summary>Holds the embedded database, generated keys and local media unless configured elsewhere.</summary>
    [Required]
    public string DataDirectory { get; set; } = "data";
}

public sealed class DatabaseOptions : IValidatableObject
{
    public const string Section = "Database";

    public DatabaseProvider Provider { get; set; } = DatabaseProvider.Sqlite;

    /// <summary>Required for PostgreSQL; for SQLite defaults to a file in the data directory.</summary>
    public string? ConnectionString { get; set; }

    public bool MigrateOnStartup { get; set; } = true;

    /// <summary>
    /// SQLite only: how often the write-ahead log is copied into the database file and flushed, beside the writer
    /// instead of inside a commit (<see cref="SqliteCheckpointer"/>). An OS crash loses at most the commits since.
    /// </summary>
    public TimeSpan SqliteCheckpointInterval { get; set; } = TimeSpan.FromSeconds(1);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Provider == DatabaseProvider.Postgres && string.IsNullOrWhiteSpace(ConnectionString))
        {
            yield return new ValidationResult(
                "Database:ConnectionString is required when Database:Provider is Postgres.",
                [nameof(ConnectionString)]);
        }
        if (SqliteCheckpointInterval < TimeSpan.FromMilliseconds(10) || SqliteCheckpointInterval > TimeSpan.FromHours(1))
        {
            yield return new ValidationResult(
                "Database:SqliteCheckpointInterval must be between 00:00:00.010 and 01:00:00.",
                [nameof(SqliteCheckpointInterval)]);
        }
    }
}
