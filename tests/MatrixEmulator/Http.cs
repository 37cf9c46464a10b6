using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace MatrixEmulator;

/// <summary>What every endpoint needs: the state, the appservice side, and the HTTP plumbing they share.</summary>
internal sealed class Homeserver(EmulatorOptions options, HomeserverState state, AppservicePusher? pusher)
{
    private static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public EmulatorOptions Options { get; } = options;
    public HomeserverState State { get; } = state;
    public AppservicePusher? Pusher { get; } = pusher;

    private readonly System.Collections.Concurrent.ConcurrentQueue<Exception> _serverErrors = new();

    public IReadOnlyList<Exception> ServerErrors => _serverErrors.ToList();

    public void RecordServerError(Exception error) => _serverErrors.Enqueue(error);

    /// <summary>Synapse asks the appservice about an unregistered user in its namespace before inviting them.</summary>
    public async Task AskAppserviceAboutUserAsync(string userId)
    {
        if (Pusher is not null && State.IsLocal(userId) && State.FindUser(userId) is null && Options.Appservice!.IsInUserNamespace(userId))
        {
            await Pusher.QueryUserAsync(userId);
        }
    }

    /// <summary>Resolves an alias, asking the appservice to create it first if it is in its namespace and unknown.</summary>
    public async Task<string?> ResolveAliasAsync(string alias)
    {
        if (State.ResolveAlias(alias) is { } roomId)
        {
            return roomId;
        }

        if (Pusher is not null && Options.Appservice!.IsInAliasNamespace(alias))
        {
            await Pusher.QueryAliasAsync(alias);
            return State.ResolveAlias(alias);
        }

        return null;
    }

    public Requester Authenticate(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        var token = header.StartsWith("Bearer ", StringComparison.Ordinal)
            ? header["Bearer ".Length..]
            : context.Request.Query["access_token"].FirstOrDefault();
        return State.Authenticate(token, context.Request.Query["user_id"].FirstOrDefault());
    }

    public static async Task<JsonObject> ReadJsonAsync(HttpContext context)
    {
        using var reader = new StreamReader(context.Request.Body);
        var text = await reader.ReadToEndAsync(context.RequestAborted);
        if (string.IsNullOrWhiteSpace(text))
        {
            return [];
        }

        try
        {
            return JsonNode.Parse(text) as JsonObject ?? throw new MatrixException(400, "M_NOT_JSON", "Content must be a JSON object.");
        }
        catch (JsonException)
        {
            throw new MatrixException(400, "M_NOT_JSON", "Content not JSON.");
        }
    }

    public static async Task WriteJsonAsync(HttpContext context, JsonNode body, int status = 200)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(body.ToJsonString(Json), context.RequestAborted);
    }

    public async Task WriteErrorAsync(HttpContext context, MatrixException error, bool retryAfterHeader = false)
    {
        if (error.Errcode == "M_LIMIT_EXCEEDED" && (Options.RetryAfterHeader || retryAfterHeader) && error.ToJson()["retry_after_ms"] is JsonValue ms)
        {
            context.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling((long)ms / 1000.0)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        await WriteJsonAsync(context, error.ToJson(), error.Status);
    }

    public static string Route(HttpContext context, string name) => (string)context.Request.RouteValues[name]!;

    public static string? Query(HttpContext context, string name) => context.Request.Query[name].FirstOrDefault();
}

internal static class RouteExtensions
{
    /// <summary>Maps a client-server endpoint under both r0 and v3, as Synapse 1.67 served both.</summary>
    public static void MapClient(this IEndpointRouteBuilder app, string method, string pattern, RequestDelegate handler)
    {
        app.MapMethods($"/_matrix/client/v3/{pattern}", [method], handler);
        app.MapMethods($"/_matrix/client/r0/{pattern}", [method], handler);
    }

    public static void MapMedia(this IEndpointRouteBuilder app, string method, string pattern, RequestDelegate handler)
    {
        app.MapMethods($"/_matrix/media/v3/{pattern}", [method], handler);
        app.MapMethods($"/_matrix/media/r0/{pattern}", [method], handler);
    }
}
