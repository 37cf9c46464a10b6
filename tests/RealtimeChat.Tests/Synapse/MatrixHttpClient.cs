using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RealtimeChat.Tests.Synapse;

/// <summary>One Matrix account acting through the Client-Server API over HTTP, as Element would: a human with an access
/// token, or an appservice user (the as_token, optionally masquerading with <c>user_id</c>).</summary>
public sealed class MatrixHttpClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly string? _masquerade;
    private long _txn;

    public MatrixHttpClient(Uri homeserver, string accessToken, string userId, string? masquerade = null)
    {
        _http = new HttpClient { BaseAddress = homeserver, Timeout = TimeSpan.FromSeconds(60) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", accessToken);
        UserId = userId;
        _masquerade = masquerade;
    }

    public string UserId { get; }

    public static async Task<MatrixHttpClient> LoginAsync(Uri homeserver, string localpart, string password)
    {
        using var http = new HttpClient { BaseAddress = homeserver, Timeout = TimeSpan.FromSeconds(60) };
        var body = new JsonObject
        {
            ["type"] = "m.login.password",
            ["identifier"] = new JsonObject { ["type"] = "m.id.user", ["user"] = localpart },
            ["password"] = password,
        };
        using var response = await http.PostAsync("/_matrix/client/v3/login", Json(body));
        var login = await ReadAsync(response, "login");
        return new MatrixHttpClient(homeserver, (string)login["access_token"]!, (string)login["user_id"]!);
    }

    private string WithUser(string path) =>
        _masquerade is null ? path : $"{path}{(path.Contains('?') ? '&' : '?')}user_id={Uri.EscapeDataString(_masquerade)}";

    private string NextTxn() => $"t{DateTime.UtcNow.Ticks}-{Interlocked.Increment(ref _txn)}";

    private static StringContent Json(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    private static async Task<JsonObject> ReadAsync(HttpResponseMessage response, string what)
    {
        var text = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode)
        {
            throw new MatrixRequestException(what, response.StatusCode, text);
        }
        return JsonNode.Parse(text.Length == 0 ? "{}" : text)!.AsObject();
    }

    public async Task<JsonObject> RequestAsync(HttpMethod method, string path, JsonNode? body = null, string? what = null)
    {
        using var request = new HttpRequestMessage(method, WithUser(path)) { Content = body is null ? null : Json(body) };
        using var response = await _http.SendAsync(request);
        return await ReadAsync(response, what ?? $"{method} {path}");
    }

    private static string Room(string roomId) => Uri.EscapeDataString(roomId);

    /// <returns>The event id.</returns>
    public async Task<string> SendAsync(string roomId, string type, JsonObject content, string? txnId = null)
    {
        var answer = await RequestAsync(HttpMethod.Put, $"/_matrix/client/v3/rooms/{Room(roomId)}/send/{Uri.EscapeDataString(type)}/{txnId ?? NextTxn()}", content);
        return (string)answer["event_id"]!;
    }

    public Task<string> SendTextAsync(string roomId, string body) =>
        SendAsync(roomId, "m.room.message", new JsonObject { ["msgtype"] = "m.text", ["body"] = body });

    /// <summary>A reply as Element 1.11 sends it: the <c>m.in_reply_to</c> relation plus the fallback quote in body and HTML.</summary>
    public Task<string> ReplyAsync(string roomId, string eventId, string originalSender, string originalBody, string text) =>
        SendAsync(roomId, "m.room.message", new JsonObject
        {
            ["msgtype"] = "m.text",
            ["body"] = $"> <{originalSender}> {originalBody}\n\n{text}",
            ["format"] = "org.matrix.custom.html",
            ["formatted_body"] =
                $"<mx-reply><blockquote><a href=\"https://matrix.to/#/{roomId}/{eventId}\">In reply to</a> " +
                $"<a href=\"https://matrix.to/#/{originalSender}\">{originalSender}</a><br>{WebUtility.HtmlEncode(originalBody)}</blockquote></mx-reply>" +
                WebUtility.HtmlEncode(text),
            ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = new JsonObject { ["event_id"] = eventId } },
        });

    public Task<string> EditAsync(string roomId, string eventId, string text) =>
        SendAsync(roomId, "m.room.message", new JsonObject
        {
            ["msgtype"] = "m.text",
            ["body"] = $"* {text}",
            ["m.new_content"] = new JsonObject { ["msgtype"] = "m.text", ["body"] = text },
            ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.replace", ["event_id"] = eventId },
        });

    public Task<string> ReactAsync(string roomId, string eventId, string key) =>
        SendAsync(roomId, "m.reaction", new JsonObject
        {
            ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = eventId, ["key"] = key },
        });

    public async Task<string> RedactAsync(string roomId, string eventId, string? reason = null)
    {
        var body = new JsonObject();
        if (reason is not null)
        {
            body["reason"] = reason;
        }
        var answer = await RequestAsync(HttpMethod.Put, $"/_matrix/client/v3/rooms/{Room(roomId)}/redact/{Uri.EscapeDataString(eventId)}/{NextTxn()}", body);
        return (string)answer["event_id"]!;
    }

    public Task JoinAsync(string roomIdOrAlias) =>
        RequestAsync(HttpMethod.Post, $"/_matrix/client/v3/join/{Uri.EscapeDataString(roomIdOrAlias)}", new JsonObject());

    public Task InviteAsync(string roomId, string userId) =>
        RequestAsync(HttpMethod.Post, $"/_matrix/client/v3/rooms/{Room(roomId)}/invite", new JsonObject { ["user_id"] = userId });

    /// <returns>The room id, or null when the alias does not exist.</returns>
    public async Task<string?> ResolveAliasAsync(string alias)
    {
        using var response = await _http.GetAsync(WithUser($"/_matrix/client/v3/directory/room/{Uri.EscapeDataString(alias)}"));
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
        return (string?)(await ReadAsync(response, $"resolve {alias}"))["room_id"];
    }

    /// <returns>The user ids with the given membership.</returns>
    public async Task<List<string>> MembersAsync(string roomId, string membership = "join")
    {
        var answer = await RequestAsync(HttpMethod.Get, $"/_matrix/client/v3/rooms/{Room(roomId)}/members");
        return answer["chunk"]!.AsArray()
            .Where(e => (string?)e!["content"]!["membership"] == membership)
            .Select(e => (string)e!["state_key"]!).ToList();
    }

    /// <summary>The room's whole timeline as this user may see it, oldest first (<c>/messages</c> paged backwards).</summary>
    public async Task<List<MatrixEvent>> TimelineAsync(string roomId)
    {
        var events = new List<MatrixEvent>();
        string? from = null;
        while (true)
        {
            var query = $"/_matrix/client/v3/rooms/{Room(roomId)}/messages?dir=b&limit=1000" + (from is null ? "" : $"&from={Uri.EscapeDataString(from)}");
            var page = await RequestAsync(HttpMethod.Get, query);
            var chunk = page["chunk"]?.AsArray() ?? [];
            events.AddRange(chunk.Select(e => new MatrixEvent(e!.AsObject())));
            if (chunk.Count == 0 || (string?)page["end"] is not { } end || end == from)
            {
                break;
            }
            from = end;
        }
        events.Reverse();
        return events;
    }

    /// <summary>The <c>m.room.message</c> events of the room, oldest first.</summary>
    public async Task<List<MatrixEvent>> MessagesAsync(string roomId) =>
        (await TimelineAsync(roomId)).Where(e => e.Type == "m.room.message").ToList();

    /// <summary>One <c>/sync</c>: returns the body (rooms.join.*.timeline.events) and its next_batch.</summary>
    public async Task<(JsonObject Body, string NextBatch)> SyncAsync(string? since, TimeSpan timeout, string? filter = null)
    {
        var query = $"/_matrix/client/v3/sync?timeout={(int)timeout.TotalMilliseconds}"
            + (since is null ? "" : $"&since={Uri.EscapeDataString(since)}")
            + (filter is null ? "" : $"&filter={Uri.EscapeDataString(filter)}");
        var body = await RequestAsync(HttpMethod.Get, query);
        return (body, (string)body["next_batch"]!);
    }

    /// <summary>The timeline events of joined rooms in a <c>/sync</c> answer, per room.</summary>
    public static IEnumerable<(string RoomId, MatrixEvent Event)> SyncTimeline(JsonObject sync) =>
        (sync["rooms"]?["join"]?.AsObject() ?? [])
            .SelectMany(room => (room.Value?["timeline"]?["events"]?.AsArray() ?? []).Select(e => (room.Key, new MatrixEvent(e!.AsObject()))));

    /// <returns>The mxc:// URI.</returns>
    public async Task<string> UploadAsync(byte[] bytes, string contentType, string fileName)
    {
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        using var response = await _http.PostAsync(WithUser($"/_matrix/media/v3/upload?filename={Uri.EscapeDataString(fileName)}"), content);
        return (string)(await ReadAsync(response, "upload"))["content_uri"]!;
    }

    public async Task<byte[]> DownloadAsync(string mxc)
    {
        var uri = new Uri(mxc);
        using var response = await _http.GetAsync($"/_matrix/media/v3/download/{uri.Host}{uri.AbsolutePath}");
        if (!response.IsSuccessStatusCode)
        {
            throw new MatrixRequestException($"download {mxc}", response.StatusCode, await response.Content.ReadAsStringAsync());
        }
        return await response.Content.ReadAsByteArrayAsync();
    }

    public void Dispose() => _http.Dispose();
}

public sealed class MatrixRequestException(string what, HttpStatusCode status, string body)
    : Exception($"{what}: {(int)status} {body}")
{
    public HttpStatusCode Status { get; } = status;
}

/// <summary>A client-format room event.</summary>
public sealed record MatrixEvent(JsonObject Json)
{
    public string Type => (string)Json["type"]!;

    public string EventId => (string)Json["event_id"]!;

    public string Sender => (string)Json["sender"]!;

    public JsonObject Content => Json["content"]?.AsObject() ?? [];

    public string? Body => (string?)(Content["body"] as JsonValue is { } v && v.GetValueKind() == JsonValueKind.String ? v : null);

    public long OriginServerTs => (long)Json["origin_server_ts"]!;

    public string? StateKey => (string?)Json["state_key"];

    public override string ToString() => Json.ToJsonString();
}
