using System.Net.Http.Headers;
using System.Text.Json.Nodes;

namespace MatrixEmulator;

/// <summary>
/// A "human" Matrix user for tests. Its actions run in-process against the homeserver state, not over HTTP, so they
/// are not hit by injected faults and need no client; they still go through the homeserver's rules and feed /sync and
/// the appservice pusher exactly like HTTP requests. To exercise HTTP, use <see cref="CreateHttpClient"/>.
/// </summary>
public sealed class MatrixUser
{
    private readonly Homeserver _hs;
    private readonly Uri _baseUrl;

    internal MatrixUser(Homeserver hs, Uri baseUrl, string userId, string accessToken, string deviceId)
    {
        _hs = hs;
        _baseUrl = baseUrl;
        UserId = userId;
        AccessToken = accessToken;
        DeviceId = deviceId;
    }

    public string UserId { get; }
    public string AccessToken { get; }
    public string DeviceId { get; }

    // Like a client of a stopped server, a user cannot act while the homeserver is down.
    private Requester Requester => _hs.State.IsDown
        ? throw new HttpRequestException(HttpRequestError.ConnectionError, "Connection refused: the homeserver is down (restarting or shut down).")
        : new(UserId, DeviceId, "token:" + AccessToken, false, AccessToken);

    /// <summary>An HttpClient aimed at the emulator with this user's token; the caller disposes it.</summary>
    public HttpClient CreateHttpClient()
    {
        var client = new HttpClient { BaseAddress = _baseUrl };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AccessToken);
        return client;
    }

    /// <summary>Creates a room the way <c>POST /createRoom</c> does; <paramref name="request"/> is its body.</summary>
    public async Task<string> CreateRoomAsync(JsonObject request)
    {
        foreach (var invitee in request["invite"] as JsonArray ?? [])
        {
            await _hs.AskAppserviceAboutUserAsync((string)invitee!);
        }

        return _hs.State.CreateRoom(Requester, request);
    }

    public Task<string> CreateRoomAsync(string? name = null, params string[] invite)
    {
        var request = new JsonObject { ["preset"] = "private_chat", ["invite"] = new JsonArray(invite.Select(i => (JsonNode)i).ToArray()) };
        if (name is not null)
        {
            request["name"] = name;
        }

        return CreateRoomAsync(request);
    }

    public async Task<string> JoinAsync(string roomIdOrAlias)
    {
        var roomId = roomIdOrAlias.StartsWith('#')
            ? await _hs.ResolveAliasAsync(roomIdOrAlias) ?? throw Errors.NotFound($"Room alias {roomIdOrAlias} not found")
            : roomIdOrAlias;
        return _hs.State.Join(Requester, roomId);
    }

    public async Task InviteAsync(string roomId, string userId)
    {
        await _hs.AskAppserviceAboutUserAsync(userId);
        _hs.State.Invite(Requester, roomId, userId);
    }

    public string Send(string roomId, string eventType, JsonObject content) => _hs.State.Send(Requester, roomId, eventType, content);

    /// <summary>
    /// Sends any content as <c>PUT /send</c> (or, with <paramref name="stateKey"/>, <c>PUT /state</c>) would, with only
    /// the checks Synapse 1.67 makes: an m.room.message needs string <c>body</c> and <c>msgtype</c>, floats and
    /// integers beyond 2^53 are refused, a relation needs a known parent; anything else goes, such as
    /// <c>"m.relates_to": {"m.in_reply_to": "a string"}</c>. Refusals throw <see cref="MatrixException"/> with
    /// Synapse's status and errcode. To store what Synapse would refuse from a client, use
    /// <see cref="HomeserverEmulator.InjectFederatedEvent"/>.
    /// </summary>
    public Task<string> SendRawAsync(string roomId, string eventType, JsonObject content, string? stateKey = null)
    {
        try
        {
            // Through JSON text and back, as a request body would be, so .NET values become what a client would have sent.
            var parsed = (JsonObject)JsonNode.Parse(content.ToJsonString())!;
            return Task.FromResult(_hs.State.Send(Requester, roomId, eventType, parsed, stateKey));
        }
        catch (Exception error) when (error is MatrixException or HttpRequestException)
        {
            return Task.FromException<string>(error);
        }
    }

    public string SendText(string roomId, string body) =>
        Send(roomId, EventTypes.Message, new JsonObject { ["msgtype"] = "m.text", ["body"] = body });

    public string SendHtml(string roomId, string body, string html) => Send(roomId, EventTypes.Message, new JsonObject
    {
        ["msgtype"] = "m.text",
        ["body"] = body,
        ["format"] = "org.matrix.custom.html",
        ["formatted_body"] = html,
    });

    /// <summary>An edit (m.replace). The homeserver does not check that <paramref name="eventId"/> is this user's.</summary>
    public string Edit(string roomId, string eventId, string newBody) => Send(roomId, EventTypes.Message, new JsonObject
    {
        ["msgtype"] = "m.text",
        ["body"] = "* " + newBody,
        ["m.new_content"] = new JsonObject { ["msgtype"] = "m.text", ["body"] = newBody },
        ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.replace", ["event_id"] = eventId },
    });

    public string Reply(string roomId, string eventId, string body) => Send(roomId, EventTypes.Message, new JsonObject
    {
        ["msgtype"] = "m.text",
        ["body"] = body,
        ["m.relates_to"] = new JsonObject { ["m.in_reply_to"] = new JsonObject { ["event_id"] = eventId } },
    });

    public string React(string roomId, string eventId, string key) => Send(roomId, EventTypes.Reaction, new JsonObject
    {
        ["m.relates_to"] = new JsonObject { ["rel_type"] = "m.annotation", ["event_id"] = eventId, ["key"] = key },
    });

    public string Redact(string roomId, string eventId, string? reason = null) => _hs.State.Redact(Requester, roomId, eventId, reason);

    public void SetTyping(string roomId, bool typing, TimeSpan? timeout = null) =>
        _hs.State.SetTyping(Requester, roomId, UserId, typing, timeout ?? TimeSpan.FromSeconds(30));

    public void SendReadReceipt(string roomId, string eventId) => _hs.State.SendReceipt(Requester, roomId, "m.read", eventId);

    public void SetDisplayName(string? displayName) => _hs.State.SetProfileField(Requester, UserId, "displayname", displayName);

    /// <summary>Stores media and returns its mxc:// URI.</summary>
    public string Upload(byte[] bytes, string contentType, string? fileName = null) => _hs.State.Upload(Requester, contentType, fileName, bytes);
}
