using Dapper;
using Microsoft.Data.Sqlite;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Storage;

/// <summary>
/// SQLite's write-ahead log is copied into the database file by a background task, not by whichever commit takes the
/// log past SQLite's own threshold. These tests run on SQLite in both runs of the suite: there is nothing like it on
/// PostgreSQL, whose commits flush its WAL by design.
/// </summary>
public sealed class SqliteCheckpointTests
{
    private static Task<ChatServer> StartSqliteAsync(string interval) => ChatServer.StartAsync(new()
    {
        ["Database:Provider"] = "Sqlite",
        ["Database:ConnectionString"] = null,
        ["Database:SqliteCheckpointInterval"] = interval,
    });

    [Fact]
    public async Task A_stored_message_reaches_the_database_file_within_the_checkpoint_interval()
    {
        await using var server = await StartSqliteAsync("00:00:00.200");
        var alice = server.Client(Guid.NewGuid());
        var conversation = await alice.CreateGroupAsync("checkpointed");
        var message = (await alice.SendAsync(conversation, "on disk, not only in the log")).GetProperty("id").GetGuid();

        // The database file alone, without its -wal: what is there has been checkpointed. A handful of writes is far
        // below the 1,000 pages at which SQLite would checkpoint inside a commit.
        var database = Path.Combine(server.DataDirectory, "chat.db");
        await Eventually.Async(() => InFileAlone(database, message), "the message in chat.db without its write-ahead log", TimeSpan.FromSeconds(10), TimeSpan.FromMilliseconds(100));
    }

    private static bool InFileAlone(string database, Guid message)
    {
        var copy = Path.Combine(Path.GetTempPath(), $"chat-checkpoint-{Guid.NewGuid():N}.db");
        try
        {
            File.Copy(database, copy);
            using var connection = new SqliteConnection($"Data Source={copy};Mode=ReadOnly;Pooling=False");
            connection.Open();
            return connection.ExecuteScalar<long>("SELECT COUNT(*) FROM messages WHERE id = @message", new { message }) == 1;
        }
        catch (SqliteException)
        {
            // Not even the schema is in the file yet, or the copy caught a checkpoint half-written: not yet.
            return false;
        }
        finally
        {
            File.Delete(copy);
        }
    }
}
