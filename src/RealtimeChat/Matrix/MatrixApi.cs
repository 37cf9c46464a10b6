using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Matrix;

/// <summary>A homeserver refusal or failure, classified (<see cref="MatrixFailures"/>) for the dispatcher and the inbound path.</summary>
/// <param name="outcomeUnknown">The request may have reached the homeserver and taken effect (no answer after sending, a 5xx).</param>
public sealed class MatrixApiException(HttpStatusCode? status, string? errcode, string message, TimeSpan? retryAfter = null, bool outcomeUnknown = false)
    : Exception(message)
{
    public HttpStatusCode? Status { get; } = status;

    public string? Errcode { get; } = errcode;

    public TimeSpan? RetryAfter { get; } = retryAfter;

    public bool OutcomeUnknown { get; } = outcomeUnknown || (int?)status >= 500;

    public FailureClass Class => MatrixFailures.ClassOf(Status, Errcode);

    /// <summary>
    /// The homeserver as a whole is not answering (no answer, a gateway's 502/503/504): every room waits on one health
    /// probe instead of each backing off on its own, and all resume together when it answers.
    /// </summary>
    public bool HomeserverDown => Status is null or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout;
}

/// <summary>The Client-Server API calls the bridge makes, as the appservice (optionally masquerading) or the service account.</summary>
public sealed class MatrixApi(HttpClient http, IOptions<MatrixOptions> options, MatrixCredentials credentials)
{
    private bool? _authenticatedMedia;

    private MatrixOptions Settings => options.Value;

    public async Task RegisterGhostAsync(string localpart, CancellationToken cancellationToken)
    {
        try
        {
            await SendAsync(HttpMethod.Post, "/_matrix/client/v3/register", null,
                new JsonObject { ["type"] = "m.login.application_service", ["username"] = localpart, ["inhibit_login"] = true }, cancellationToken);
        }
        catch (MatrixApiException ex) when (ex.Errcode == "M_USER_IN_USE")
        {
            // Registered before (by us, before a crash or by an earlier install): that is the goal.
        }
    }

    public async Task<string> CreateRoomAsync(JsonObject request, CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Post, "/_matrix/client/v3/createRoom", null, request, cancellationToken))!["room_id"]!.GetValue<string>();

    public async Task<string?> ResolveAliasAsync(string alias, CancellationToken cancellationToken)
    {
        try
        {
            var answer = await SendAsync(HttpMethod.Get, $"/_matrix/client/v3/directory/room/{Uri.EscapeDataString(alias)}", null, null, cancellationToken);
            return answer!["room_id"]!.GetValue<string>();
        }
        catch (MatrixApiException ex) when (ex.Errcode == "M_NOT_FOUND")
        {
            return null;
        }
    }

    public Task InviteAsync(string roomId, string userId, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/invite", null, new JsonObject { ["user_id"] = userId }, cancellationToken);

    public Task JoinAsync(string roomId, string asUser, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/join", asUser, new JsonObject(), cancellationToken);

    public Task LeaveAsync(string roomId, string asUser, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/leave", asUser, new JsonObject(), cancellationToken);

    public Task KickAsync(string roomId, string userId, string? reason, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/kick", null,
            new JsonObject { ["user_id"] = userId, ["reason"] = reason }, cancellationToken);

    /// <param name="timestamp">When it happened in the app: an appservice may set the event's origin_server_ts (<c>ts</c>),
    /// so that a send delayed by an outage or a backfill shows its real time.</param>
    public async Task<string> SendEventAsync(
        string roomId, string eventType, string txnId, JsonObject content, string? asUser, DateTimeOffset? timestamp, CancellationToken cancellationToken)
    {
        if (timestamp is { } original && Settings.Mode != MatrixMode.Appservice)
        {
            // Only an appservice may date an event; a client's is dated when sent, so the original time travels in the content.
            content[CreatedAtField] = original.ToUnixTimeMilliseconds();
        }
        return (await SendAsync(HttpMethod.Put,
            $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/send/{Uri.EscapeDataString(eventType)}/{Uri.EscapeDataString(txnId)}{Timestamp(timestamp)}",
            asUser, content, cancellationToken))!["event_id"]!.GetValue<string>();
    }

    /// <summary>In client mode, when the app said what an event carries (milliseconds since the epoch).</summary>
    public const string CreatedAtField = "io.nova.created_at";

    public async Task<string> RedactAsync(
        string roomId, string eventId, string txnId, JsonObject content, string? asUser, DateTimeOffset? timestamp, CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Put,
            $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/redact/{Uri.EscapeDataString(eventId)}/{Uri.EscapeDataString(txnId)}{Timestamp(timestamp)}",
            asUser, content, cancellationToken))!["event_id"]!.GetValue<string>();

    /// <summary>The room's latest events, newest first (<c>/messages</c> backwards), as the bot or the service account.</summary>
    public async Task<JsonArray> RecentEventsAsync(string roomId, JsonObject filter, int limit, CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Get,
            $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/messages?dir=b&limit={limit}&filter={Uri.EscapeDataString(filter.ToJsonString())}",
            null, null, cancellationToken))?["chunk"] as JsonArray ?? [];

    public Task ReceiptAsync(string roomId, string eventId, string asUser, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/receipt/m.read/{Uri.EscapeDataString(eventId)}", asUser, new JsonObject(), cancellationToken);

    public Task TypingAsync(string roomId, string userId, TimeSpan timeout, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Put, $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/typing/{Uri.EscapeDataString(userId)}", userId,
            new JsonObject { ["typing"] = true, ["timeout"] = (long)timeout.TotalMilliseconds }, cancellationToken);

    private string Timestamp(DateTimeOffset? timestamp) =>
        timestamp is { } ts && Settings.Mode == MatrixMode.Appservice ? $"?ts={ts.ToUnixTimeMilliseconds()}" : "";

    public async Task<string> SetStateAsync(string roomId, string eventType, string stateKey, JsonObject content, CancellationToken cancellationToken) =>
        (await SendAsync(HttpMethod.Put,
            $"/_matrix/client/v3/rooms/{Uri.EscapeDataString(roomId)}/state/{Uri.EscapeDataString(eventType)}/{Uri.EscapeDataString(stateKey)}",
            null, content, cancellationToken))!["event_id"]!.GetValue<string>();

    /// <summary>
    /// A JSON body with its length declared. Synapse's web server (Twisted) spools a body sent without one (chunked, as
    /// <see cref="JsonContent"/> streams it) to a temporary file on its reactor thread, a cost paid on every event sent.
    /// </summary>
    internal static ByteArrayContent Json(object body)
    {
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, body.GetType(), JsonSerializerOptions.Web));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        return content;
    }

    public async Task<string> UploadAsync(Stream content, string contentType, string? fileName, string? asUser, CancellationToken cancellationToken)
    {
        var path = "/_matrix/media/v3/upload" + (fileName is null ? "" : $"?filename={Uri.EscapeDataString(fileName)}");
        using var body = new StreamContent(content);
        body.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        var answer = await SendAsync(HttpMethod.Post, path, asUser, body, cancellationToken);
        return answer!["content_uri"]!.GetValue<string>();
    }

    /// <summary>
    /// Downloads an <c>mxc://</c> URI, through authenticated media where the homeserver serves it (spec v1.11) and the
    /// unauthenticated v3 path where it does not (Synapse 1.67 answers 400 M_UNRECOGNIZED). The caller disposes the response.
    /// </summary>
    public async Task<HttpResponseMessage> DownloadAsync(string mxcUri, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(mxcUri, UriKind.Absolute, out var mxc) || mxc.Scheme != "mxc" || mxc.AbsolutePath.Trim('/').Length == 0)
        {
            throw new MatrixApiException(HttpStatusCode.BadRequest, "M_INVALID_PARAM", $"Not an mxc URI: {mxcUri}");
        }
        var media = $"{Uri.EscapeDataString(mxc.Authority)}/{Uri.EscapeDataString(mxc.AbsolutePath.Trim('/'))}";
        var response = await GetMediaAsync(
            await ServesAuthenticatedMediaAsync(cancellationToken) ? $"/_matrix/client/v1/media/download/{media}" : $"/_matrix/media/v3/download/{media}",
            cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            var status = response.StatusCode;
            response.Dispose();
            throw new MatrixApiException(status, null, $"Downloading {mxcUri} failed with {(int)status}.");
        }
        return response;
    }

    /// <summary>Asked once per process (<c>/_matrix/client/versions</c>); asked again only if the question failed.</summary>
    private async ValueTask<bool> ServesAuthenticatedMediaAsync(CancellationToken cancellationToken)
    {
        if (_authenticatedMedia is { } known)
        {
            return known;
        }
        var versions = await SendAsync(HttpMethod.Get, "/_matrix/client/versions", null, null, cancellationToken);
        var spec = (versions?["versions"] as JsonArray ?? []).Select(v => v is JsonValue value && value.TryGetValue<string>(out var s) ? s : null);
        var stable = versions?["unstable_features"] is JsonObject features && features["org.matrix.msc3916.stable"] is JsonValue flag
            && flag.TryGetValue<bool>(out var on) && on;
        _authenticatedMedia = stable || spec.Any(v => v is not null && Version.TryParse(v.TrimStart('v', 'r'), out var parsed) && parsed >= new Version(1, 11));
        return _authenticatedMedia.Value;
    }

    private async Task<HttpResponseMessage> GetMediaAsync(string path, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", await credentials.AccessTokenAsync(cancellationToken));
        try
        {
            return await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            throw new MatrixApiException(null, null, $"Homeserver unreachable: {ex.Message}");
        }
    }

    public async Task<JsonNode?> SendAsync(HttpMethod method, string path, string? asUser, object? body, CancellationToken cancellationToken)
    {
        if (asUser is not null && Settings.Mode == MatrixMode.Appservice)
        {
            path += (path.Contains('?') ? "&" : "?") + "user_id=" + Uri.EscapeDataString(asUser);
        }
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", await credentials.AccessTokenAsync(cancellationToken));
        request.Content = body switch
        {
            null => null,
            HttpContent content => content,
            _ => Json(body),
        };

        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(request, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            // A refused connection never carried the request; anything that broke later may have delivered it.
            throw new MatrixApiException(null, null, $"Homeserver unreachable: {ex.Message}", outcomeUnknown: ex.HttpRequestError != HttpRequestError.ConnectionError);
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new MatrixApiException(null, null, "Homeserver did not answer in time.", outcomeUnknown: true);
        }

        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken);
            JsonNode? json = null;
            try
            {
                json = text.Length == 0 ? null : JsonNode.Parse(text);
            }
            catch (JsonException)
            {
                // Proxies answer with HTML when the homeserver is down; the status says enough.
            }
            if (response.IsSuccessStatusCode)
            {
                return json;
            }
            var errcode = json?["errcode"]?.GetValue<string>();
            var error = json?["error"]?.GetValue<string>() ?? response.ReasonPhrase;
            TimeSpan? retryAfter = json?["retry_after_ms"] is { } ms ? TimeSpan.FromMilliseconds(ms.GetValue<long>())
                : response.Headers.RetryAfter?.Delta;
            throw new MatrixApiException(response.StatusCode, errcode, $"{method} {path.Split('?')[0]} → {(int)response.StatusCode} {errcode}: {error}", retryAfter);
        }
    }
}

/// <summary>The token the bridge authenticates with: the as_token, or the service account's (logging in if needed).</summary>
public sealed class MatrixCredentials(IOptions<MatrixOptions> options, IHttpClientFactory httpClients)
{
    private readonly SemaphoreSlim _login = new(1, 1);
    private string? _token;

    /// <summary>The token the homeserver presents to us, read once (it may live in a file).</summary>
    public byte[] HsToken => field ??= Encoding.UTF8.GetBytes(MatrixOptions.Secret(options.Value.HsToken, options.Value.HsTokenFile) ?? "");

    public async ValueTask<string> AccessTokenAsync(CancellationToken cancellationToken)
    {
        if (_token is not null)
        {
            return _token;
        }
        var settings = options.Value;
        var configured = settings.Mode == MatrixMode.Appservice
            ? MatrixOptions.Secret(settings.AsToken, settings.AsTokenFile)
            : MatrixOptions.Secret(settings.AccessToken, settings.AccessTokenFile);
        if (configured is not null)
        {
            return _token = configured;
        }

        await _login.WaitAsync(cancellationToken);
        try
        {
            if (_token is not null)
            {
                return _token;
            }
            using var http = httpClients.CreateClient(nameof(MatrixCredentials));
            http.BaseAddress = settings.HomeserverUrl;
            using var response = await http.PostAsync("/_matrix/client/v3/login", MatrixApi.Json(new
            {
                type = "m.login.password",
                identifier = new { type = "m.id.user", user = settings.UserId },
                password = MatrixOptions.Secret(settings.Password, settings.PasswordFile),
            }), cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                throw new MatrixApiException(response.StatusCode, null, $"Matrix login as {settings.UserId} failed with {(int)response.StatusCode}.");
            }
            var answer = await response.Content.ReadFromJsonAsync<JsonObject>(cancellationToken);
            return _token = answer!["access_token"]!.GetValue<string>();
        }
        catch (HttpRequestException ex)
        {
            throw new MatrixApiException(null, null, $"Homeserver unreachable for login: {ex.Message}");
        }
        finally
        {
            _login.Release();
        }
    }

    /// <summary>A 401 from the homeserver: log in again next time (client mode with a password).</summary>
    public void Invalidate() => _token = null;
}
