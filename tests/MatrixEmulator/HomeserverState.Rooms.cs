using System.Text.Json.Nodes;

namespace MatrixEmulator;

internal sealed partial class HomeserverState
{
    // Synapse 1.67 strips these into invite_room_state (room_prejoin_state defaults), plus the inviter's member event.
    private static readonly string[] PrejoinStateTypes =
        [EventTypes.Name, EventTypes.JoinRules, EventTypes.CanonicalAlias, EventTypes.Avatar, EventTypes.Encryption, EventTypes.Create];

    public string CreateRoom(Requester requester, JsonObject request)
    {
        lock (_gate)
        {
            var creator = _users[requester.UserId];
            var visibility = (string?)request["visibility"] ?? "private";
            var preset = (string?)request["preset"] ?? (visibility == "public" ? "public_chat" : "private_chat");
            var isPublic = preset == "public_chat";
            var invitees = request["invite"] is JsonArray invite ? invite.Select(i => (string)i!).ToList() : [];
            var initialState = request["initial_state"] is JsonArray states ? states.OfType<JsonObject>().ToList() : [];

            string? alias = null;
            if ((string?)request["room_alias_name"] is { } aliasName)
            {
                alias = $"#{aliasName}:{ServerName}";
                if (_aliases.ContainsKey(alias))
                {
                    throw new MatrixException(400, "M_ROOM_IN_USE", "Room alias already taken");
                }

                CheckAliasNamespace(requester, alias);
            }

            var room = new Room(Ids.RoomId(ServerName));
            _rooms[room.RoomId] = room;
            if (alias is not null)
            {
                _aliases[alias] = room.RoomId;
                room.Aliases.Add(alias);
            }

            var createContent = request["creation_content"] is JsonObject extra ? (JsonObject)extra.DeepClone() : [];
            createContent["room_version"] = (string?)request["room_version"] ?? "9";
            createContent["creator"] = creator.UserId;
            Persist(room, EventTypes.Create, creator.UserId, createContent, stateKey: "");
            Persist(room, EventTypes.Member, creator.UserId, MemberContent("join", creator), stateKey: creator.UserId);
            Persist(room, EventTypes.PowerLevels, creator.UserId, PowerLevels(creator.UserId, preset, invitees, request["power_level_content_override"] as JsonObject), stateKey: "");

            bool InInitialState(string type) => initialState.Any(s => (string?)s["type"] == type && ((string?)s["state_key"] ?? "") == "");
            if (alias is not null && !InInitialState(EventTypes.CanonicalAlias))
            {
                Persist(room, EventTypes.CanonicalAlias, creator.UserId, new JsonObject { ["alias"] = alias }, stateKey: "");
            }

            if (!InInitialState(EventTypes.JoinRules))
            {
                Persist(room, EventTypes.JoinRules, creator.UserId, new JsonObject { ["join_rule"] = isPublic ? "public" : "invite" }, stateKey: "");
            }

            if (!InInitialState(EventTypes.HistoryVisibility))
            {
                Persist(room, EventTypes.HistoryVisibility, creator.UserId, new JsonObject { ["history_visibility"] = "shared" }, stateKey: "");
            }

            if (!isPublic && !InInitialState(EventTypes.GuestAccess))
            {
                Persist(room, EventTypes.GuestAccess, creator.UserId, new JsonObject { ["guest_access"] = "can_join" }, stateKey: "");
            }

            foreach (var state in initialState)
            {
                Persist(room, (string)state["type"]!, creator.UserId, state["content"] is JsonObject c ? (JsonObject)c.DeepClone() : [], stateKey: (string?)state["state_key"] ?? "");
            }

            if ((string?)request["name"] is { } name)
            {
                Persist(room, EventTypes.Name, creator.UserId, new JsonObject { ["name"] = name }, stateKey: "");
            }

            if ((string?)request["topic"] is { } topic)
            {
                Persist(room, EventTypes.Topic, creator.UserId, new JsonObject { ["topic"] = topic }, stateKey: "");
            }

            var isDirect = request["is_direct"] is JsonValue direct && (bool)direct;
            foreach (var invitee in invitees)
            {
                Invite(requester, room.RoomId, invitee, isDirect);
            }

            return room.RoomId;
        }
    }

    private static JsonObject PowerLevels(string creator, string preset, List<string> invitees, JsonObject? overrides)
    {
        var users = new JsonObject { [creator] = 100 };
        if (preset == "trusted_private_chat")
        {
            foreach (var invitee in invitees)
            {
                users[invitee] = 100;
            }
        }

        var levels = new JsonObject
        {
            ["users"] = users,
            ["users_default"] = 0,
            ["events"] = new JsonObject
            {
                ["m.room.name"] = 50,
                ["m.room.power_levels"] = 100,
                ["m.room.history_visibility"] = 100,
                ["m.room.canonical_alias"] = 50,
                ["m.room.avatar"] = 50,
                ["m.room.tombstone"] = 100,
                ["m.room.server_acl"] = 100,
                ["m.room.encryption"] = 100,
            },
            ["events_default"] = 0,
            ["state_default"] = 50,
            ["ban"] = 50,
            ["kick"] = 50,
            ["redact"] = 50,
            ["invite"] = preset == "public_chat" ? 50 : 0,
            ["historical"] = 100,
        };
        foreach (var (key, value) in overrides ?? [])
        {
            levels[key] = value?.DeepClone();
        }

        return levels;
    }

    public string Join(Requester requester, string roomIdOrAlias)
    {
        lock (_gate)
        {
            var roomId = roomIdOrAlias.StartsWith('#')
                ? ResolveAlias(roomIdOrAlias) ?? throw Errors.NotFound($"Room alias {roomIdOrAlias} not found")
                : roomIdOrAlias;
            if (!_rooms.TryGetValue(roomId, out var room))
            {
                throw Errors.NotFound("No known servers");
            }

            switch (room.MembershipOf(requester.UserId))
            {
                case "join":
                    return roomId;
                case "ban":
                    throw Errors.Forbidden("You are banned from this room");
                case "invite":
                    break;
                default:
                    if (JsonText.String(room.GetState(EventTypes.JoinRules)?.Content["join_rule"]) != "public")
                    {
                        throw Errors.Forbidden("You are not invited to this room.");
                    }

                    break;
            }

            Persist(room, EventTypes.Member, requester.UserId, MemberContent("join", _users[requester.UserId]), stateKey: requester.UserId);
            return roomId;
        }
    }

    public void Invite(Requester requester, string roomId, string target, bool isDirect = false)
    {
        lock (_gate)
        {
            var room = RoomForMember(requester, roomId);
            switch (room.MembershipOf(target))
            {
                case "join":
                    throw Errors.Forbidden($"{target} is already in the room.");
                case "ban":
                    throw Errors.Forbidden($"{target} is banned from the room");
            }

            if (room.PowerLevelOf(requester.UserId) < room.RequiredLevel("invite", 0))
            {
                throw Errors.Forbidden("You don't have permission to invite users");
            }

            // A local user that does not exist is invited all the same (the recording got 200), just without a display name.
            var content = MemberContent("invite", _users.GetValueOrDefault(target));
            if (isDirect)
            {
                content["is_direct"] = true;
            }

            var stripped = StrippedPrejoinState(room);
            if (room.GetState(EventTypes.Member, requester.UserId) is { } inviterMember)
            {
                stripped.Add(EventSerializer.Stripped(inviterMember));
            }

            Persist(room, EventTypes.Member, requester.UserId, content, stateKey: target, inviteRoomState: stripped);
        }
    }

    public void Leave(Requester requester, string roomId)
    {
        lock (_gate)
        {
            var room = _rooms.GetValueOrDefault(roomId) ?? throw Errors.Forbidden("Unknown room");
            var membership = room.MembershipOf(requester.UserId);
            if (membership is not ("join" or "invite"))
            {
                throw Errors.NotInRoom(requester.UserId, roomId, membership);
            }

            Persist(room, EventTypes.Member, requester.UserId, new JsonObject { ["membership"] = "leave" }, stateKey: requester.UserId);
        }
    }

    public void Kick(Requester requester, string roomId, string target, string? reason)
    {
        lock (_gate)
        {
            var room = RoomForMember(requester, roomId);
            var membership = room.MembershipOf(target);
            if (membership is not ("join" or "invite"))
            {
                throw Errors.NotInRoom(target, roomId, membership);
            }

            var level = room.PowerLevelOf(requester.UserId);
            if (level < room.RequiredLevel("kick", 50) || level <= room.PowerLevelOf(target))
            {
                throw Errors.Forbidden($"You cannot kick user {target}.");
            }

            var content = new JsonObject { ["membership"] = "leave" };
            if (reason is not null)
            {
                content["reason"] = reason;
            }

            Persist(room, EventTypes.Member, requester.UserId, content, stateKey: target);
        }
    }

    /// <summary>
    /// Sends a message or state event. <paramref name="txnKey"/> makes it idempotent the way Synapse is: the key is the
    /// request path plus the requester's scope, which for the appservice is the appservice, not the ghost.
    /// <paramref name="originServerTs"/> is the appservice's <c>?ts=</c>, which 1.67 honours on /send only.
    /// </summary>
    public string Send(
        Requester requester, string roomId, string type, JsonObject content, string? stateKey = null, string? txnKey = null, string? txnId = null, long? originServerTs = null)
    {
        lock (_gate)
        {
            if (CachedTransaction(txnKey) is { } earlier)
            {
                return earlier;
            }

            var room = _rooms.GetValueOrDefault(roomId) ?? throw Errors.Forbidden("Unknown room");
            if (PersistedTransaction(requester, roomId, txnId) is { } persisted)
            {
                return RememberTransaction(txnKey, persisted);
            }

            // Synapse's order: the event is built and validated (content, relation) before the auth rules run.
            ValidateNewEvent(type, content, stateKey);
            CheckRelation(room, requester, type, content);
            RoomForMember(requester, roomId);
            var level = room.PowerLevelOf(requester.UserId);
            var required = room.RequiredLevelToSend(type, stateKey is not null);
            if (level < required)
            {
                throw Errors.Forbidden($"You don't have permission to post that to the room. user_level ({level}) < send_level ({required})");
            }

            CheckRateLimit(requester);
            var e = Persist(room, type, requester.UserId, content, stateKey: stateKey, txnRequester: requester, txnId: txnId, originServerTs: originServerTs);
            return RememberTransaction(txnKey, e.EventId, requester, txnId);
        }
    }

    public string Redact(Requester requester, string roomId, string targetId, string? reason, string? txnKey = null, string? txnId = null)
    {
        lock (_gate)
        {
            if (CachedTransaction(txnKey) is { } earlier)
            {
                return earlier;
            }

            var room = RoomForMember(requester, roomId);
            if (PersistedTransaction(requester, roomId, txnId) is { } persisted)
            {
                return RememberTransaction(txnKey, persisted);
            }

            if (_eventsById.TryGetValue(targetId, out var target) && target.Sender != requester.UserId
                && room.PowerLevelOf(requester.UserId) < room.RequiredLevel("redact", 50))
            {
                throw Errors.Forbidden("You don't have permission to redact events");
            }

            CheckRateLimit(requester);
            var content = new JsonObject();
            if (reason is not null)
            {
                content["reason"] = reason;
            }

            var e = Persist(room, EventTypes.Redaction, requester.UserId, content, redacts: targetId, txnRequester: requester, txnId: txnId);
            return RememberTransaction(txnKey, e.EventId, requester, txnId);
        }
    }

    // Synapse's HttpTransactionCache: in memory only, entries dropped after 30 minutes (and at a restart).
    private string? CachedTransaction(string? txnKey)
    {
        if (txnKey is null || !_txnCache.TryGetValue(txnKey, out var entry))
        {
            return null;
        }

        if (DateTimeOffset.UtcNow - entry.At <= Options.SendTxnCacheLifetime)
        {
            return entry.EventId;
        }

        _txnCache.Remove(txnKey);
        return null;
    }

    // Synapse's event_txn_id table: persisted, but only for requesters with an access token id, which an appservice
    // (as_token) has not. So after a restart a user's retried send still finds its event, the appservice's does not.
    private string? PersistedTransaction(Requester requester, string roomId, string? txnId) =>
        PersistedTxnKey(requester, roomId, txnId) is { } key && _eventTxnIds.TryGetValue(key, out var eventId) ? eventId : null;

    private string RememberTransaction(string? txnKey, string eventId, Requester? requester = null, string? txnId = null)
    {
        if (txnKey is not null)
        {
            _txnCache[txnKey] = (eventId, DateTimeOffset.UtcNow);
        }

        if (requester is not null && PersistedTxnKey(requester, _eventsById[eventId].RoomId, txnId) is { } key)
        {
            _eventTxnIds[key] = eventId;
        }

        return eventId;
    }

    private static string? PersistedTxnKey(Requester requester, string roomId, string? txnId) =>
        txnId is null || requester.IsAppservice || requester.AccessToken is null ? null : $"{roomId}|{requester.UserId}|{requester.AccessToken}|{txnId}";

    public void SetTyping(Requester requester, string roomId, string userId, bool typing, TimeSpan timeout)
    {
        lock (_gate)
        {
            if (requester.UserId != userId)
            {
                throw Errors.Forbidden("Cannot set another user's typing state");
            }

            var room = RoomForMember(requester, roomId);
            if (typing)
            {
                room.Typing[userId] = DateTimeOffset.UtcNow + timeout;
            }
            else
            {
                room.Typing.Remove(userId);
            }

            room.TypingSerial = ++_typingSerial;
            EphemeralPersisted?.Invoke(TypingEdu(room), room);
            Signal();
        }
    }

    public void SendReceipt(Requester requester, string roomId, string receiptType, string eventId)
    {
        lock (_gate)
        {
            var room = RoomForMember(requester, roomId);
            if (receiptType is not ("m.read" or "m.read.private" or "m.fully_read"))
            {
                throw Errors.Unknown($"Receipt type must be 'm.read', 'm.read.private' or 'm.fully_read'");
            }

            var receipt = new Receipt(eventId, NowMs, ++_receiptSerial);
            room.Receipts[(requester.UserId, receiptType)] = receipt;
            if (receiptType == "m.read")
            {
                EphemeralPersisted?.Invoke(ReceiptEdu(room, [(requester.UserId, receiptType, receipt)]), room);
            }

            Signal();
        }
    }

    // ---- aliases ----

    public string? ResolveAlias(string alias)
    {
        lock (_gate)
        {
            return _aliases.GetValueOrDefault(alias);
        }
    }

    public void CreateAlias(Requester requester, string alias, string roomId)
    {
        lock (_gate)
        {
            if (_aliases.ContainsKey(alias))
            {
                throw new MatrixException(409, "M_UNKNOWN", $"Room alias {alias} already exists");
            }

            CheckAliasNamespace(requester, alias);
            var room = _rooms.GetValueOrDefault(roomId) ?? throw Errors.NotFound("Room not found");
            _aliases[alias] = roomId;
            room.Aliases.Add(alias);
        }
    }

    public void DeleteAlias(Requester requester, string alias)
    {
        lock (_gate)
        {
            if (!_aliases.Remove(alias, out var roomId))
            {
                throw Errors.NotFound("Room alias not found");
            }

            _rooms[roomId].Aliases.Remove(alias);
        }
    }

    private void CheckAliasNamespace(Requester requester, string alias)
    {
        var appservice = Options.Appservice;
        if (appservice is { Exclusive: true } && !requester.IsAppservice && appservice.IsInAliasNamespace(alias))
        {
            throw new MatrixException(400, "M_EXCLUSIVE", "This alias is reserved by an application service.");
        }
    }

    // ---- shared checks ----

    private Room RoomForMember(Requester requester, string roomId)
    {
        var room = _rooms.GetValueOrDefault(roomId) ?? throw Errors.Forbidden("Unknown room");
        var membership = room.MembershipOf(requester.UserId);
        return membership == "join" ? room : throw Errors.NotInRoom(requester.UserId, roomId, membership);
    }

    // Synapse 1.67's EventValidator.validate_builder for the types we meet, then validate_new's canonical-JSON rule for
    // room version 9. Nothing else about the content is checked: m.relates_to may be a string, m.in_reply_to anything.
    private static void ValidateNewEvent(string type, JsonObject content, string? stateKey)
    {
        switch (type)
        {
            case EventTypes.Message:
                EnsureStrings(content, "body", "msgtype");
                break;
            case EventTypes.Topic:
                EnsureStrings(content, "topic");
                EnsureState(type, stateKey);
                break;
            case EventTypes.Name:
                EnsureStrings(content, "name");
                EnsureState(type, stateKey);
                break;
        }

        EnsureCanonicalJson(content);
    }

    private static void EnsureStrings(JsonObject content, params string[] keys)
    {
        foreach (var key in keys)
        {
            if (!content.ContainsKey(key))
            {
                throw Errors.Unknown($"'{key}' not in content");
            }

            if (JsonText.String(content[key]) is null)
            {
                throw Errors.Unknown($"'{key}' not a string type");
            }
        }
    }

    private static void EnsureState(string type, string? stateKey)
    {
        if (stateKey is null)
        {
            throw Errors.Unknown($"'{type}' must be state events");
        }
    }

    private const long CanonicalJsonMaxInt = (1L << 53) - 1;

    private static void EnsureCanonicalJson(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, value) in o)
                {
                    EnsureCanonicalJson(value);
                }

                break;
            case JsonArray a:
                foreach (var item in a)
                {
                    EnsureCanonicalJson(item);
                }

                break;
            case JsonValue v when v.GetValueKind() == System.Text.Json.JsonValueKind.Number:
                // Python reads 1.0 and 1e3 as floats, which canonical JSON forbids.
                var text = v.ToJsonString();
                if (text.IndexOfAny(['.', 'e', 'E']) >= 0)
                {
                    throw Errors.BadJson("Bad JSON value: float");
                }

                if (!long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var number)
                    || number is > CanonicalJsonMaxInt or < -CanonicalJsonMaxInt)
                {
                    throw Errors.BadJson("JSON integer out of range");
                }

                break;
        }
    }

    // Synapse 1.67's _validate_event_relation: any relation with a string rel_type and event_id needs a known parent
    // (or one other events already relate to) in the same room; it does not check who sent the parent, so an edit of
    // someone else's event is accepted. The errors are all M_UNKNOWN on this version.
    private void CheckRelation(Room room, Requester requester, string type, JsonObject content)
    {
        if (RoomEvent.RelationOf(content) is not var (relType, parentId))
        {
            return;
        }

        if (_eventsById.TryGetValue(parentId, out var parent))
        {
            if (parent.RoomId != room.RoomId)
            {
                throw Errors.Unknown("Relations must be in the same room");
            }
        }
        else if (!_stream.Any(e => e.Relation is { } r && r.EventId == parentId))
        {
            throw Errors.Unknown("Can't send relation to unknown event");
        }

        if (relType == "m.annotation")
        {
            var key = JsonText.String(content["m.relates_to"]!["key"]) ?? throw Errors.Unknown("Missing aggregation key");
            if (key.Length > 500)
            {
                throw Errors.Unknown("Aggregation key is too long");
            }

            if (room.Events.Any(e => e.Sender == requester.UserId && e.Type == type && e.RedactedBy is null
                && e.Relation is { RelType: "m.annotation" } rel && rel.EventId == parentId
                && JsonText.String(e.Content["m.relates_to"]!["key"]) == key))
            {
                throw Errors.Unknown("Can't send same reaction twice");
            }
        }
        else if (relType == "m.thread" && parent?.Relation is not null)
        {
            throw Errors.Unknown("Cannot start threads from an event with a relation");
        }
    }

    /// <summary>The room's pre-join state (<see cref="PrejoinStateTypes"/>) in stripped form, as an invite carries it.</summary>
    private static JsonArray StrippedPrejoinState(Room room)
    {
        var stripped = new JsonArray();
        foreach (var type in PrejoinStateTypes)
        {
            if (room.GetState(type) is { } state)
            {
                stripped.Add(EventSerializer.Stripped(state));
            }
        }

        return stripped;
    }

    private static JsonObject TypingEdu(Room room)
    {
        var now = DateTimeOffset.UtcNow;
        var typing = new JsonArray(room.Typing.Where(t => t.Value > now).Select(t => (JsonNode)t.Key).ToArray());
        return new JsonObject { ["type"] = "m.typing", ["room_id"] = room.RoomId, ["content"] = new JsonObject { ["user_ids"] = typing } };
    }

    private static JsonObject ReceiptEdu(Room room, IEnumerable<(string UserId, string Type, Receipt Receipt)> receipts)
    {
        var content = new JsonObject();
        foreach (var (userId, type, receipt) in receipts)
        {
            var byEvent = content[receipt.EventId] as JsonObject ?? (JsonObject)(content[receipt.EventId] = new JsonObject())!;
            var byType = byEvent[type] as JsonObject ?? (JsonObject)(byEvent[type] = new JsonObject())!;
            byType[userId] = new JsonObject { ["ts"] = receipt.Ts };
        }

        return new JsonObject { ["type"] = "m.receipt", ["room_id"] = room.RoomId, ["content"] = content };
    }
}
