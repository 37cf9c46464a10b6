using System.Collections;
using System.Collections.Concurrent;
using System.Data;
using System.Data.Common;
using System.Reflection;
using System.Text.RegularExpressions;
using Dapper;
using Npgsql;

namespace RealtimeChat.Storage;

/// <summary>
/// Writes of one transaction whose results are not read until all of them ran, sent together. On PostgreSQL that is
/// one batch, one round trip, instead of one per statement: at a few messages a second each round trip wakes a thread
/// of this process and a PostgreSQL backend, which cost both of them more CPU than the statement itself
/// (docs/performance.md, "Fewer round trips"). SQLite runs in-process, so there the statements simply run in order.
/// </summary>
/// <remarks>Parameters are given as for Dapper: an object whose properties are named in the SQL as <c>@Name</c>, or a
/// sequence of such objects (the statement runs once for each).</remarks>
public sealed partial class StatementBatch(DbConnection connection, DbTransaction transaction)
{
    // The properties of a parameter type that a statement names, found once per statement and type.
    private static readonly ConcurrentDictionary<(string Sql, Type Type), PropertyInfo[]> Named = new();
    private readonly List<(string Sql, object? Parameters)> _statements = [];

    public bool IsEmpty => _statements.Count == 0;

    /// <returns>Where this statement's entry is in what <see cref="ExecuteAsync"/> returns.</returns>
    public int Add(string sql, object? parameters = null)
    {
        _statements.Add((sql, parameters));
        return _statements.Count - 1;
    }

    /// <summary>Runs the statements in the order added and empties the batch. The first that fails throws, as it would alone.</summary>
    /// <returns>The rows each <see cref="Add"/> affected (over all its rows when given a sequence).</returns>
    public async Task<int[]> ExecuteAsync()
    {
        var statements = _statements.ToArray();
        _statements.Clear();
        var affected = new int[statements.Length];
        if (connection is not NpgsqlConnection postgres)
        {
            for (var i = 0; i < statements.Length; i++)
            {
                affected[i] = await connection.ExecuteAsync(statements[i].Sql, statements[i].Parameters, transaction);
            }
            return affected;
        }

        await using var batch = new NpgsqlBatch(postgres, (NpgsqlTransaction)transaction);
        var owners = new List<int>();
        for (var i = 0; i < statements.Length; i++)
        {
            var (sql, parameters) = statements[i];
            foreach (var row in parameters is IEnumerable rows and not string ? rows.Cast<object?>() : [parameters])
            {
                batch.BatchCommands.Add(Command(sql, row));
                owners.Add(i);
            }
        }
        if (batch.BatchCommands.Count == 0)
        {
            return affected;
        }
        await batch.ExecuteNonQueryAsync();
        for (var c = 0; c < owners.Count; c++)
        {
            affected[owners[c]] += batch.BatchCommands[c].RecordsAffected;
        }
        return affected;
    }

    /// <summary>What Dapper does with a parameter object for PostgreSQL: the properties the SQL names, timestamps in UTC.</summary>
    private static NpgsqlBatchCommand Command(string sql, object? parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        if (parameters is null)
        {
            return command;
        }
        var properties = Named.GetOrAdd((sql, parameters.GetType()), key =>
        {
            var named = ParameterName().Matches(key.Sql).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.OrdinalIgnoreCase);
            return [.. key.Type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => named.Contains(p.Name))];
        });
        foreach (var property in properties)
        {
            var value = property.GetValue(parameters);
            command.Parameters.Add(value switch
            {
                null => new NpgsqlParameter(property.Name, DbTypeOf(property.PropertyType)) { Value = DBNull.Value },
                DateTimeOffset time => new NpgsqlParameter(property.Name, time.ToUniversalTime()),
                Enum => new NpgsqlParameter(property.Name, Convert.ChangeType(value, Enum.GetUnderlyingType(value.GetType()))),
                _ => new NpgsqlParameter(property.Name, value),
            });
        }
        return command;
    }

    private static DbType DbTypeOf(Type type) => (Nullable.GetUnderlyingType(type) ?? type) switch
    {
        var t when t == typeof(Guid) => DbType.Guid,
        var t when t == typeof(long) => DbType.Int64,
        var t when t == typeof(int) => DbType.Int32,
        var t when t == typeof(bool) => DbType.Boolean,
        var t when t == typeof(DateTimeOffset) => DbType.DateTimeOffset,
        var t when t == typeof(byte[]) => DbType.Binary,
        { IsEnum: true } => DbType.Int32,
        _ => DbType.String,
    };

    [GeneratedRegex(@"@(\w+)")]
    private static partial Regex ParameterName();
}
