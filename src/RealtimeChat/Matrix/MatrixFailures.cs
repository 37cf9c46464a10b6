using System.Data.Common;
using System.Net;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Npgsql;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Matrix;

/// <summary>What retrying a failed step can achieve.</summary>
public enum FailureClass
{
    /// <summary>Will pass once the homeserver or database recovers: retry with growing back-off, never give up.</summary>
    Transient,

    /// <summary>Can never pass as it is (refused, malformed, gone): park it with its error and move on.</summary>
    Permanent,

    /// <summary>Not understood: retried like a transient failure, parked after <c>Matrix:MaxAttempts</c>.</summary>
    Unknown,
}

/// <summary>The one place where bridge failures, in both directions, are sorted into <see cref="FailureClass"/>.</summary>
public static class MatrixFailures
{
    public static FailureClass Classify(Exception exception) => exception switch
    {
        MatrixApiException matrix => matrix.Class,
        ApiException => FailureClass.Permanent,
        ActionNotReadyException => FailureClass.Unknown,
        NotSupportedException => FailureClass.Permanent,
        DbException db when IsConstraintViolation(db) => FailureClass.Permanent,
        DbException or TimeoutException or HttpRequestException or IOException => FailureClass.Transient,
        JsonException or FormatException or InvalidCastException or ArgumentException or KeyNotFoundException => FailureClass.Permanent,
        _ => FailureClass.Unknown,
    };

    /// <summary>The <c>matrix_errors_total</c> label: the errcode, else the status, else what kind of failure.</summary>
    public static string MetricLabel(Exception exception) => exception switch
    {
        MatrixApiException matrix => matrix.Errcode ?? (matrix.Status is { } status ? ((int)status).ToString() : "unreachable"),
        ApiException api => api.Code,
        DbException => "database",
        _ => "internal",
    };

    // A constraint the data breaks fails the same way every time.
    private static bool IsConstraintViolation(DbException exception) => exception switch
    {
        PostgresException pg => pg.SqlState.StartsWith("23", StringComparison.Ordinal) || pg.SqlState.StartsWith("22", StringComparison.Ordinal),
        SqliteException sqlite => sqlite.SqliteErrorCode == 19,
        _ => false,
    };

    internal static FailureClass ClassOf(HttpStatusCode? status, string? errcode) => (status, errcode) switch
    {
        (null, _) => FailureClass.Transient,
        (_, "M_LIMIT_EXCEEDED") or (HttpStatusCode.TooManyRequests, _) => FailureClass.Transient,
        (HttpStatusCode.Unauthorized, _) => FailureClass.Transient,
        (HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout, _) => FailureClass.Transient,
        (HttpStatusCode.RequestTimeout, _) => FailureClass.Transient,
        ({ } code, _) when (int)code is >= 400 and < 500 => FailureClass.Permanent,
        _ => FailureClass.Unknown,
    };
}
