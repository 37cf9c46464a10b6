using System.Data.Common;
using Npgsql;

namespace RealtimeChat.Storage;

public static class SqlDialect
{
    /// <summary>
    /// "column is one of @parameter (an array)". Dapper expands <c>IN @list</c> for SQLite but sends a native array
    /// to PostgreSQL, which needs <c>= ANY</c>.
    /// </summary>
    public static string InList(DbConnection connection, string column, string parameter) =>
        connection is NpgsqlConnection ? $"{column} = ANY(@{parameter})" : $"{column} IN @{parameter}";
}
