using System.Text.Json.Nodes;

namespace MatrixEmulator;

/// <summary>Who a request acts as once its token (and, for the appservice, <c>?user_id=</c>) is resolved.</summary>
/// <param name="TxnScope">What send idempotency is keyed on: the appservice as a whole, or one access token.</param>
internal sealed record Requester(string UserId, string? DeviceId, string TxnScope, bool IsAppservice, string? AccessToken);

internal sealed record MediaItem(string ContentType, string? FileName, byte[] Bytes, string UploadedBy);

/// <summary>
/// The homeserver's data and rules. One lock guards everything: the emulator serves tests, not load, and a single
/// total order of writes is what gives events their stream ordering.
/// </summary>
internal sealed partial class HomeserverState(EmulatorOptions options)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, User> _users = [];
    private readonly Dictionary<string, Session> _sessions = [];
    private readonly Dictionary<string, Room> _rooms = [];
    private readonly Dictionary<string, string> _aliases = [];
    private readonly Dictionary<string, RoomEvent> _eventsById = [];
    private readonly List<RoomEvent> _stream = [];
    private readonly Dictionary<string, (string EventId, DateTimeOffset At)> _txnCache = [];
    private readonly Dictionary<string, string> _eventTxnIds = [];
    private readonly Dictionary<string, MediaItem> _media = [];
    private readonly Dictionary<string, (double Count, DateTimeOffset At)> _rateBuckets = [];
    private TaskCompletionSource _changed = NewSignal();
    private long _streamPosition;
    private long _typingSerial;
    private long _receiptSerial;
    private long _lastTs;

    public EmulatorOptions Options { get; } = options;

    public string ServerName => Options.ServerName;

    /// <summary>Called under the lock for every persisted event, in stream order.</summary>
    public Action<RoomEvent, Room>? EventPersisted { get; set; }

    /// <summary>Called under the lock for typing and receipt changes, as the EDU the appservice would get.</summary>
    public Action<JsonObject, Room>? EphemeralPersisted { get; set; }

    public static long NowMs => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    /// <summary>Between <see cref="HomeserverEmulator.ShutDownAsync"/> and the next start: in-process users cannot act.</summary>
    public bool IsDown { get; private set; }

    /// <summary>
    /// The process stops. What Synapse 1.67 keeps only in memory is lost: the send txnId cache, rate-limit buckets and
    /// typing, whose stream counts from 0 again (so a sync from an older token misses typing until the new serials pass
    /// the old position, as in Synapse's TypingNotificationEventSource). Users, tokens, rooms, events, receipts, media,
    /// filters, the persisted txnIds of users (event_txn_id) and the event and receipt stream positions stay, as in its
    /// SQLite store, so a sync token from before stays valid.
    /// </summary>
    public void Stop()
    {
        lock (_gate)
        {
            IsDown = true;
            _txnCache.Clear();
            _rateBuckets.Clear();
            _typingSerial = 0;
            foreach (var room in _rooms.Values)
            {
                room.Typing.Clear();
                room.TypingSerial = 0;
            }
        }
    }

    public void Start()
    {
        lock (_gate)
        {
            IsDown = false;
        }
    }

    public string UserIdFor(string localpart) => $"@{localpart}:{ServerName}";

    public bool IsLocal(string userId) => userId.EndsWith(":" + ServerName, StringComparison.Ordinal);

    public T Read<T>(Func<T> read)
    {
        lock (_gate)
        {
            return read();
        }
    }

    /// <summary>Completes at the next change to anything a sync could report.</summary>
    public Task NextChange()
    {
        lock (_gate)
        {
            return _changed.Task;
        }
    }

    // ---- users and authentication ----

    public User CreateUser(string localpart, string? password, bool isAppserviceUser, string? displayName = null)
    {
        lock (_gate)
        {
            var userId = UserIdFor(localpart);
            if (_users.ContainsKey(userId))
            {
                throw new MatrixException(400, "M_USER_IN_USE", "User ID already taken.");
            }

            // Synapse sets the initial display name to the localpart.
            var user = new User(userId, localpart) { Password = password, DisplayName = displayName ?? localpart, IsAppserviceUser = isAppserviceUser };
            _users[userId] = user;
            return user;
        }
    }

    public User? FindUser(string userId)
    {
        lock (_gate)
        {
            return _users.GetValueOrDefault(userId);
        }
    }

    public Session CreateSession(string userId, string? deviceId = null)
    {
        lock (_gate)
        {
            var user = _users[userId];
            var session = new Session(Ids.AccessToken(user.Localpart), userId, deviceId ?? Ids.DeviceId());
            _sessions[session.AccessToken] = session;
            return session;
        }
    }

    public Session Login(string identifier, string? password, string? deviceId)
    {
        var userId = identifier.StartsWith('@') ? identifier : UserIdFor(identifier);
        lock (_gate)
        {
            if (!_users.TryGetValue(userId, out var user) || user.Password is null || user.Password != password)
            {
                throw Errors.Forbidden("Invalid username or password");
            }

            return CreateSession(userId, deviceId);
        }
    }

    public void Logout(string accessToken)
    {
        lock (_gate)
        {
            _sessions.Remove(accessToken);
        }
    }

    public Requester Authenticate(string? accessToken, string? masqueradeAs)
    {
        if (accessToken is null)
        {
            throw Errors.MissingToken();
        }

        var appservice = Options.Appservice;
        if (appservice is not null && accessToken == appservice.AsToken)
        {
            var sender = UserIdFor(appservice.SenderLocalpart);
            var userId = masqueradeAs ?? sender;
            if (userId != sender && !(IsLocal(userId) && appservice.IsInUserNamespace(userId)))
            {
                throw Errors.Forbidden($"Application service cannot masquerade as this user ({userId}).");
            }

            if (FindUser(userId) is null)
            {
                throw Errors.Forbidden($"Application service has not registered this user ({userId})");
            }

            return new Requester(userId, null, "as:" + appservice.Id, true, null);
        }

        lock (_gate)
        {
            return _sessions.TryGetValue(accessToken, out var session)
                ? new Requester(session.UserId, session.DeviceId, "token:" + accessToken, false, accessToken)
                : throw Errors.UnknownToken();
        }
    }

    /// <summary>Registration through the appservice; the only registration Synapse allowed in the recordings.</summary>
    public (User User, Session? Session) RegisterAppserviceUser(string localpart, bool inhibitLogin)
    {
        var appservice = Options.Appservice!;
        var userId = UserIdFor(localpart.ToLowerInvariant());
        if (!appservice.IsInUserNamespace(userId) && localpart != appservice.SenderLocalpart)
        {
            throw new MatrixException(400, "M_EXCLUSIVE", "Invalid user localpart for this application service.");
        }

        var user = CreateUser(localpart.ToLowerInvariant(), null, isAppserviceUser: true);
        return (user, inhibitLogin ? null : CreateSession(user.UserId));
    }

    // ---- profile ----

    public JsonObject GetProfile(string userId, string? field = null)
    {
        lock (_gate)
        {
            if (!_users.TryGetValue(userId, out var user))
            {
                throw Errors.NotFound("Profile was not found");
            }

            var profile = new JsonObject();
            if (field is null or "displayname" && user.DisplayName is not null)
            {
                profile["displayname"] = user.DisplayName;
            }

            if (field is null or "avatar_url" && user.AvatarUrl is not null)
            {
                profile["avatar_url"] = user.AvatarUrl;
            }

            return profile;
        }
    }

    /// <summary>Sets displayname or avatar_url and, as Synapse does, re-sends the member event in every joined room.</summary>
    public void SetProfileField(Requester requester, string userId, string field, string? value)
    {
        lock (_gate)
        {
            if (requester.UserId != userId)
            {
                throw Errors.Forbidden($"Cannot set another user's {field}");
            }

            var user = _users[userId];
            if (field == "displayname")
            {
                user.DisplayName = value;
            }
            else
            {
                user.AvatarUrl = value;
            }

            foreach (var room in _rooms.Values.Where(r => r.MembershipOf(userId) == "join").ToList())
            {
                Persist(room, EventTypes.Member, userId, MemberContent("join", user), stateKey: userId);
            }
        }
    }

    // ---- media ----

    public string Upload(Requester requester, string contentType, string? fileName, byte[] bytes)
    {
        if (bytes.LongLength > Options.MaxUploadBytes)
        {
            throw new MatrixException(413, "M_TOO_LARGE", "Upload request body is too large");
        }

        lock (_gate)
        {
            var mediaId = Ids.MediaId();
            _media[mediaId] = new MediaItem(contentType, fileName, bytes, requester.UserId);
            return $"mxc://{ServerName}/{mediaId}";
        }
    }

    public MediaItem Download(string serverName, string mediaId)
    {
        lock (_gate)
        {
            return serverName == ServerName && _media.TryGetValue(mediaId, out var item)
                ? item
                // Synapse 1.67 leaks the Python bytes repr of the path segments into the message.
                : throw Errors.NotFound($"Not found [b'{serverName}', b'{mediaId}']");
        }
    }

    // ---- filters ----

    public string CreateFilter(Requester requester, string userId, JsonObject filter)
    {
        lock (_gate)
        {
            if (requester.UserId != userId)
            {
                throw Errors.Forbidden("Can only create filters for local users");
            }

            var user = _users[userId];
            user.Filters.Add(filter);
            return (user.Filters.Count - 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    public JsonObject GetFilter(string userId, string filterId)
    {
        lock (_gate)
        {
            return _users.TryGetValue(userId, out var user) && int.TryParse(filterId, out var index) && index >= 0 && index < user.Filters.Count
                ? user.Filters[index]
                : throw Errors.NotFound("No such filter");
        }
    }

    // ---- the event stream ----

    private RoomEvent Persist(
        Room room,
        string type,
        string sender,
        JsonObject content,
        string? stateKey = null,
        string? redacts = null,
        JsonArray? inviteRoomState = null,
        Requester? txnRequester = null,
        string? txnId = null,
        long? originServerTs = null,
        string? eventId = null,
        JsonObject? rawFields = null)
    {
        var ts = Math.Max(NowMs, _lastTs);
        _lastTs = ts;
        ts = originServerTs ?? ts;
        var replaces = stateKey is null ? null : room.GetState(type, stateKey);
        var e = new RoomEvent
        {
            EventId = eventId ?? Ids.EventId(),
            RawFields = rawFields,
            RoomId = room.RoomId,
            Type = type,
            Sender = sender,
            StateKey = stateKey,
            Content = content,
            Redacts = redacts,
            OriginServerTs = ts,
            StreamOrdering = ++_streamPosition,
            Depth = room.Events.Count + 1,
            Replaces = replaces,
            InviteRoomState = inviteRoomState,
            TransactionId = txnId,
            TransactionOwner = txnRequester?.AccessToken,
        };
        room.Events.Add(e);
        _stream.Add(e);
        _eventsById[e.EventId] = e;
        if (stateKey is not null)
        {
            room.State[(type, stateKey)] = e;
        }

        if (type == EventTypes.Redaction && redacts is not null
            && _eventsById.TryGetValue(redacts, out var target) && target.RoomId == room.RoomId && target.RedactedBy is null)
        {
            target.RedactedBy = e;
        }

        EventPersisted?.Invoke(e, room);
        Signal();
        return e;
    }

    // What format_event_for_client_v2 drops from a federation PDU, plus what the emulator computes itself.
    private static readonly HashSet<string> PduKeysNotShown =
        ["auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state", "room_id", "unsigned", "event_id", "type", "sender"];

    /// <summary>
    /// Persists <paramref name="pdu"/> as an event that arrived over federation: no auth rules, no content validation.
    /// Only <c>type</c> and <c>sender</c> must be strings. A string <c>state_key</c> makes it state, a string
    /// <c>redacts</c> redacts its target, an integer <c>origin_server_ts</c> is kept; any of them with another JSON
    /// type, a non-object <c>content</c>, and unknown top-level keys are served to clients as they came.
    /// </summary>
    public string InjectFederatedEvent(string roomId, JsonObject pdu)
    {
        var type = JsonText.String(pdu["type"]) ?? throw new ArgumentException("The event needs a string \"type\".", nameof(pdu));
        var sender = JsonText.String(pdu["sender"]) ?? throw new ArgumentException("The event needs a string \"sender\".", nameof(pdu));
        var raw = new JsonObject();
        foreach (var (key, value) in pdu)
        {
            if (!PduKeysNotShown.Contains(key))
            {
                raw[key] = value?.DeepClone();
            }
        }

        var content = raw["content"] is JsonObject objectContent ? (JsonObject)objectContent.DeepClone() : [];
        string? stateKey = null, redacts = null;
        long? ts = null;
        if (raw["content"] is JsonObject)
        {
            raw.Remove("content");
        }

        if (JsonText.String(raw["state_key"]) is { } s)
        {
            stateKey = s;
            raw.Remove("state_key");
        }

        if (JsonText.String(raw["redacts"]) is { } r)
        {
            redacts = r;
            raw.Remove("redacts");
        }

        if (JsonText.Integer(raw["origin_server_ts"]) is { } t)
        {
            ts = t;
            raw.Remove("origin_server_ts");
        }

        lock (_gate)
        {
            if (IsDown)
            {
                throw new InvalidOperationException("The homeserver is down: nothing can reach it over federation either.");
            }

            var room = _rooms.GetValueOrDefault(roomId) ?? throw new ArgumentException($"Unknown room {roomId}.", nameof(roomId));
            var eventId = JsonText.String(pdu["event_id"]);
            if (eventId is not null && _eventsById.ContainsKey(eventId))
            {
                throw new ArgumentException($"Event {eventId} already exists.", nameof(pdu));
            }

            return Persist(room, type, sender, content, stateKey, redacts, originServerTs: ts, eventId: eventId, rawFields: raw.Count > 0 ? raw : null).EventId;
        }
    }

    private void Signal()
    {
        var previous = _changed;
        _changed = NewSignal();
        previous.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static JsonObject MemberContent(string membership, User? user)
    {
        var content = new JsonObject { ["membership"] = membership };
        if (user?.DisplayName is not null)
        {
            content["displayname"] = user.DisplayName;
        }

        if (user?.AvatarUrl is not null)
        {
            content["avatar_url"] = user.AvatarUrl;
        }

        return content;
    }

    public void ResetRateLimits()
    {
        lock (_gate)
        {
            _rateBuckets.Clear();
        }
    }

    // Synapse's token bucket: actions leak away at PerSecond; more than Burst outstanding is refused.
    private void CheckRateLimit(Requester requester)
    {
        if (Options.MessageRateLimit is not { } limit || requester.IsAppservice)
        {
            return;
        }

        var now = DateTimeOffset.UtcNow;
        var (count, at) = _rateBuckets.GetValueOrDefault(requester.UserId, (0, now));
        var outstanding = Math.Max(0, count - (now - at).TotalSeconds * limit.PerSecond);
        if (outstanding + 1 > limit.Burst)
        {
            throw Errors.LimitExceeded(TimeSpan.FromSeconds((outstanding + 1 - limit.Burst) / limit.PerSecond));
        }

        _rateBuckets[requester.UserId] = (outstanding + 1, now);
    }
}
