using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// The Application Service API the homeserver calls. Synapse 1.67 used the legacy unprefixed paths with the
/// hs_token in the <c>access_token</c> query; newer homeservers use <c>/_matrix/app/v1</c> and a Bearer header.
/// Both are served. Errors here are Matrix errors (<c>errcode</c>), which is what the homeserver reads.
/// </summary>
public static class AppserviceEndpoints
{
    public static IEndpointRouteBuilder MapMatrix(this IEndpointRouteBuilder routes)
    {
        // Read unvalidated: commands build the app too, and `registration` must work before the tokens exist.
        var settings = routes.ServiceProvider.GetRequiredService<IConfiguration>().GetSection(MatrixOptions.Section).Get<MatrixOptions>() ?? new MatrixOptions();
        if (!settings.Enabled || settings.Mode != MatrixMode.Appservice)
        {
            return routes;
        }

        foreach (var prefix in new[] { "/_matrix/app/v1", "" })
        {
            var group = routes.MapGroup(prefix).WithTags("Matrix appservice").ExcludeFromDescription().AddEndpointFilter(RequireHsToken);
            group.MapPut("/transactions/{txnId}", ReceiveTransactionAsync);
            group.MapGet("/users/{userId}", QueryUserAsync);
            group.MapGet("/rooms/{alias}", (string alias) => NotFound($"No room is mirrored at {alias}."));
        }
        routes.MapPost("/_matrix/app/v1/ping", () => Results.Json(new JsonObject()))
            .ExcludeFromDescription().AddEndpointFilter(RequireHsToken);
        return routes;
    }

    private static async Task<IResult> ReceiveTransactionAsync(
        string txnId, HttpRequest request, ChatDatabase database, AppserviceTransactionGaps gaps, RoomTimelines timelines, MatrixIds ids,
        TimeProvider time, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        if (await gaps.RefusalAsync(txnId, cancellationToken) is { } refusal)
        {
            return Results.Json(new { errcode = "M_UNKNOWN", error = refusal }, statusCode: StatusCodes.Status503ServiceUnavailable);
        }

        JsonObject? body;
        try
        {
            body = await JsonNode.ParseAsync(request.Body, cancellationToken: cancellationToken) as JsonObject;
        }
        catch (System.Text.Json.JsonException)
        {
            body = null;
        }
        if (body is null)
        {
            MatrixMetrics.TransactionsReceived.WithLabels("malformed").Inc();
            return Results.Json(new { errcode = "M_NOT_JSON", error = "The transaction is not a JSON object." }, statusCode: StatusCodes.Status400BadRequest);
        }

        var events = (body["events"] as JsonArray ?? []).OfType<JsonObject>().ToList();
        var ephemeral = (body["ephemeral"] as JsonArray ?? body["de.sorunome.msc2409.ephemeral"] as JsonArray ?? []).OfType<JsonObject>().ToList();
        // What the homeserver delivered, once per push (a retried push counts again); events read back from a room's
        // timeline are counted apart.
        MatrixMetrics.SyncEvents.Inc(events.Count);
        if (ephemeral.Count == 0 && events.All(e => Json.String(e["sender"]) is { } sender && ids.IsEcho(sender)))
        {
            // Only what the bridge itself posted, coming back (most pushes while the app sends): nothing to remember,
            // and nothing to apply unless a pause before it has its rooms read for what Synapse dropped.
            await timelines.ApplyPushAsync(events, [], cancellationToken);
            MatrixMetrics.TransactionsReceived.WithLabels("processed").Inc();
            return Results.Json(new JsonObject());
        }
        // A homeserver that restarted numbers its transactions from 1 again: an id alone says nothing, the id with the
        // events it carries is a repeat. This only saves work; each event's own id is what keeps it from applying twice.
        var eventsHash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            string.Join('\n', events.Select(e => e["event_id"]?.ToJsonString())) + $"\n{ephemeral.Count}")));
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            if (await connection.QuerySingleOrDefaultAsync<int>(
                "SELECT 1 FROM matrix_appservice_transactions WHERE txn_id = @txnId AND events_hash = @eventsHash", new { txnId, eventsHash }) == 1)
            {
                MatrixMetrics.TransactionsReceived.WithLabels("repeated").Inc();
                return Results.Json(new JsonObject());
            }
        }

        // Stored before we answer: a transient failure here answers 500, and the homeserver sends the transaction again.
        await timelines.ApplyPushAsync(events, ephemeral, cancellationToken);

        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            await connection.ExecuteAsync(
                """
                INSERT INTO matrix_appservice_transactions (txn_id, events_hash, received_at) VALUES (@txnId, @eventsHash, @now)
                ON CONFLICT (txn_id, events_hash) DO NOTHING
                """,
                new { txnId, eventsHash, now = time.UtcNowMicros() });
        }
        MatrixMetrics.TransactionsReceived.WithLabels("processed").Inc();
        loggers.CreateLogger(typeof(AppserviceEndpoints)).LogDebug("Appservice transaction {TxnId} processed", txnId);
        return Results.Json(new JsonObject());
    }

    /// <summary>The homeserver asks whether a user in our namespace exists (e.g. before an invite): ghosts of app users do.</summary>
    private static async Task<IResult> QueryUserAsync(string userId, MatrixIds ids, MatrixApi api, IOptions<MatrixOptions> options, CancellationToken cancellationToken)
    {
        if (ids.AppUserId(userId) is not { } appUser || !userId.StartsWith($"@{options.Value.UserPrefix}", StringComparison.Ordinal))
        {
            return NotFound($"{userId} is not a user of this bridge.");
        }
        await api.RegisterGhostAsync(ids.GhostLocalpart(appUser), cancellationToken);
        return Results.Json(new JsonObject());
    }

    private static async ValueTask<object?> RequireHsToken(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var request = context.HttpContext.Request;
        var presented = request.Headers.Authorization.ToString() is { Length: > 7 } header && header.StartsWith("Bearer ", StringComparison.Ordinal)
            ? header[7..]
            : request.Query["access_token"].ToString();
        if (string.IsNullOrEmpty(presented))
        {
            return Results.Json(new { errcode = "M_UNAUTHORIZED", error = "Missing hs_token." }, statusCode: StatusCodes.Status401Unauthorized);
        }
        var expected = context.HttpContext.RequestServices.GetRequiredService<MatrixCredentials>().HsToken;
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(presented), expected))
        {
            MatrixMetrics.TransactionsReceived.WithLabels("forbidden").Inc();
            return Results.Json(new { errcode = "M_FORBIDDEN", error = "Bad hs_token." }, statusCode: StatusCodes.Status403Forbidden);
        }
        return await next(context);
    }

    private static IResult NotFound(string error) =>
        Results.Json(new { errcode = "M_NOT_FOUND", error }, statusCode: StatusCodes.Status404NotFound);
}
