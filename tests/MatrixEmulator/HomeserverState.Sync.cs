using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace MatrixEmulator;

/// <summary>A position in the streams a client syncs: events, typing and receipts.</summary>
internal readonly record struct SyncToken(long Stream, long Typing, long Receipt)
{
    // Synapse's shape is s{events}_{presence}_{typing}_{receipts}_...; the emulator keeps the events stream first
    // and fills the positions it does not model with fixed numbers so the token still has nine parts.
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"s{Stream}_{Typing}_{Receipt}_1_1_1_1_1_0");

    public static SyncToken Parse(string token)
    {
        var match = Regex.Match(token, @"^s(\d+)((?:_\d+)*)$");
        if (!match.Success)
        {
            throw Errors.Unknown("Invalid stream token");
        }

        var rest = match.Groups[2].Value.Split('_', StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
        return new SyncToken(long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), rest.ElementAtOrDefault(0), rest.ElementAtOrDefault(1));
    }
}

internal sealed partial class HomeserverState
{
    private const int DefaultTimelineLimit = 10;

    /// <summary>Builds a /sync response; null when <paramref name="nullIfEmpty"/> and an incremental sync has nothing to report.</summary>
    public JsonObject? Sync(Requester requester, string? since, JsonObject filter, bool fullState, bool nullIfEmpty)
    {
        lock (_gate)
        {
            var sinceToken = since is null ? (SyncToken?)null : SyncToken.Parse(since);
            var current = new SyncToken(_streamPosition, _typingSerial, _receiptSerial);
            var limit = (int?)filter["room"]?["timeline"]?["limit"] ?? DefaultTimelineLimit;
            var lazyMembers = (bool?)filter["room"]?["state"]?["lazy_load_members"] ?? false;
            var join = new JsonObject();
            var invite = new JsonObject();
            var leave = new JsonObject();
            var now = NowMs;

            foreach (var room in _rooms.Values)
            {
                var member = room.GetState(EventTypes.Member, requester.UserId);
                var membershipThen = sinceToken is { } s ? MembershipAt(room, requester.UserId, s.Stream) : null;
                switch (member?.Membership)
                {
                    case "join":
                        var full = sinceToken is null || fullState || membershipThen != "join";
                        if (JoinedRoom(room, requester, sinceToken, full, limit, lazyMembers, now) is { } joined)
                        {
                            join[room.RoomId] = joined;
                        }

                        break;
                    case "invite" when sinceToken is null || member.StreamOrdering > sinceToken.Value.Stream:
                        var inviteState = StrippedPrejoinState(room);
                        inviteState.Add(EventSerializer.Stripped(member));
                        invite[room.RoomId] = new JsonObject { ["invite_state"] = new JsonObject { ["events"] = inviteState } };
                        break;
                    case "leave" or "ban" when sinceToken is { } s2 && member.StreamOrdering > s2.Stream && membershipThen is "join" or "invite":
                        var left = room.Events.Where(e => e.StreamOrdering > s2.Stream && e.StreamOrdering <= member.StreamOrdering).ToList();
                        leave[room.RoomId] = new JsonObject
                        {
                            ["timeline"] = Timeline(room, left, limit, requester, now),
                            ["state"] = new JsonObject { ["events"] = new JsonArray() },
                            ["account_data"] = new JsonObject { ["events"] = new JsonArray() },
                        };
                        break;
                }
            }

            if (nullIfEmpty && sinceToken is not null && join.Count == 0 && invite.Count == 0 && leave.Count == 0)
            {
                return null;
            }

            var response = new JsonObject
            {
                ["next_batch"] = current.ToString(),
                ["device_one_time_keys_count"] = new JsonObject { ["signed_curve25519"] = 0 },
                ["org.matrix.msc2732.device_unused_fallback_key_types"] = new JsonArray(),
                ["device_unused_fallback_key_types"] = new JsonArray(),
            };

            // Synapse leaves out empty sections rather than sending empty objects.
            var rooms = new JsonObject();
            if (join.Count > 0)
            {
                rooms["join"] = join;
            }

            if (invite.Count > 0)
            {
                rooms["invite"] = invite;
            }

            if (leave.Count > 0)
            {
                rooms["leave"] = leave;
            }

            if (rooms.Count > 0)
            {
                response["rooms"] = rooms;
            }

            return response;
        }
    }

    /// <summary>The current sync position, as an incremental sync's starting point.</summary>
    public string CurrentSyncToken()
    {
        lock (_gate)
        {
            return new SyncToken(_streamPosition, _typingSerial, _receiptSerial).ToString();
        }
    }

    private JsonObject? JoinedRoom(Room room, Requester requester, SyncToken? since, bool full, int limit, bool lazyMembers, long now)
    {
        var scope = full ? room.Events : room.Events.Where(e => e.StreamOrdering > since!.Value.Stream).ToList();
        var timelineEvents = scope.TakeLast(limit).ToList();
        var limited = scope.Count > timelineEvents.Count;
        var ephemeral = Ephemeral(room, requester.UserId, since);
        if (!full && timelineEvents.Count == 0 && ephemeral.Count == 0)
        {
            return null;
        }

        var timelineStart = timelineEvents.FirstOrDefault()?.StreamOrdering ?? _streamPosition + 1;
        var stateEvents = full || limited
            ? StateAt(room, timelineStart, full ? 0 : since!.Value.Stream)
            : [];
        if (lazyMembers)
        {
            var senders = timelineEvents.Select(e => e.Sender).Append(requester.UserId).ToHashSet();
            stateEvents = stateEvents.Where(e => e.Type != EventTypes.Member || senders.Contains(e.StateKey!)).ToList();
        }

        var summary = new JsonObject();
        if (lazyMembers && (full || timelineEvents.Any(e => e.Type == EventTypes.Member)))
        {
            summary["m.joined_member_count"] = room.MembersWith("join").Count();
            summary["m.invited_member_count"] = room.MembersWith("invite").Count();
            if (room.GetState(EventTypes.Name) is null && room.GetState(EventTypes.CanonicalAlias) is null)
            {
                var heroes = room.MembersWith("join").Concat(room.MembersWith("invite")).Where(u => u != requester.UserId).Order(StringComparer.Ordinal).Take(5);
                summary["m.heroes"] = new JsonArray(heroes.Select(h => (JsonNode)h).ToArray());
            }
        }

        var (notifications, highlights) = UnreadCounts(room, requester.UserId);
        return new JsonObject
        {
            ["timeline"] = Timeline(room, timelineEvents, int.MaxValue, requester, now, limited),
            ["state"] = new JsonObject { ["events"] = new JsonArray(stateEvents.Select(e => (JsonNode)EventSerializer.Serialize(e, EventFormat.Sync, now)).ToArray()) },
            ["account_data"] = new JsonObject { ["events"] = new JsonArray() },
            ["ephemeral"] = new JsonObject { ["events"] = ephemeral },
            ["unread_notifications"] = new JsonObject { ["notification_count"] = notifications, ["highlight_count"] = highlights },
            ["summary"] = summary,
        };
    }

    private JsonObject Timeline(Room room, List<RoomEvent> events, int limit, Requester requester, long now, bool limited = false)
    {
        var shown = events.TakeLast(limit).ToList();
        var first = shown.FirstOrDefault()?.StreamOrdering ?? _streamPosition + 1;
        return new JsonObject
        {
            ["events"] = new JsonArray(shown.Select(e => (JsonNode)EventSerializer.Serialize(e, EventFormat.Sync, now, room, requester.AccessToken)).ToArray()),
            ["prev_batch"] = new SyncToken(first - 1, _typingSerial, _receiptSerial).ToString(),
            ["limited"] = limited || shown.Count < events.Count,
        };
    }

    // The state at the start of the timeline, minus what the client already had at `after`.
    private static List<RoomEvent> StateAt(Room room, long before, long after)
    {
        var state = new Dictionary<(string, string), RoomEvent>();
        foreach (var e in room.Events.Where(e => e.IsState && e.StreamOrdering < before))
        {
            state[(e.Type, e.StateKey!)] = e;
        }

        return state.Values.Where(e => e.StreamOrdering > after).OrderBy(e => e.StreamOrdering).ToList();
    }

    private static string? MembershipAt(Room room, string userId, long stream) =>
        room.Events.LastOrDefault(e => e.StreamOrdering <= stream && e.Type == EventTypes.Member && e.StateKey == userId)?.Membership;

    private static JsonArray Ephemeral(Room room, string userId, SyncToken? since)
    {
        var events = new JsonArray();
        var typing = TypingEdu(room);
        if (since is null ? ((JsonArray)typing["content"]!["user_ids"]!).Count > 0 : room.TypingSerial > since.Value.Typing)
        {
            typing.Remove("room_id");
            events.Add(typing);
        }

        var receipts = room.Receipts
            .Where(r => (since is null || r.Value.Serial > since.Value.Receipt) && (r.Key.Type != "m.read.private" || r.Key.UserId == userId) && r.Key.Type != "m.fully_read")
            .Select(r => (r.Key.UserId, r.Key.Type, r.Value))
            .ToList();
        if (receipts.Count > 0)
        {
            var edu = ReceiptEdu(room, receipts);
            edu.Remove("room_id");
            events.Add(edu);
        }

        return events;
    }

    // Synapse's default push rules notify for messages from others and highlight mentions of the user.
    private (int Notifications, int Highlights) UnreadCounts(Room room, string userId)
    {
        var readUpTo = room.Receipts.Where(r => r.Key.UserId == userId && r.Key.Type is "m.read" or "m.read.private")
            .Select(r => _eventsById.TryGetValue(r.Value.EventId, out var e) ? e.StreamOrdering : 0)
            .DefaultIfEmpty(0).Max();
        var joinedAt = room.GetState(EventTypes.Member, userId)?.StreamOrdering ?? 0;
        var displayName = _users.GetValueOrDefault(userId)?.DisplayName;
        var localpart = userId[1..userId.IndexOf(':')];
        var unread = room.Events
            .Where(e => e.StreamOrdering > Math.Max(readUpTo, joinedAt) && e.Sender != userId && e.Type is EventTypes.Message or "m.room.encrypted")
            .ToList();
        var highlights = unread.Count(e => JsonText.String(e.Content["body"]) is { } body
            && (body.Contains(localpart, StringComparison.OrdinalIgnoreCase) || (displayName is not null && body.Contains(displayName, StringComparison.OrdinalIgnoreCase))));
        return (unread.Count, highlights);
    }

    // ---- history reads ----

    // `to` bounds the pagination as Synapse's to_token does: backwards it stops after the events following it,
    // forwards at the events up to it.
    public JsonObject Messages(Requester requester, string roomId, string? from, string dir, int limit, string? to = null)
    {
        lock (_gate)
        {
            var (room, visibleUpTo) = RoomForReader(requester, roomId);
            var position = from is null ? _streamPosition : ParsePaginationToken(from);
            var backwards = dir == "b";
            var bound = to is null ? (long?)null : ParsePaginationToken(to);
            var chunk = backwards
                ? room.Events.Where(e => e.StreamOrdering <= Math.Min(position, visibleUpTo) && e.StreamOrdering > (bound ?? long.MinValue)).Reverse().Take(limit).ToList()
                : room.Events.Where(e => e.StreamOrdering > position && e.StreamOrdering <= Math.Min(visibleUpTo, bound ?? long.MaxValue)).Take(limit).ToList();
            var now = NowMs;
            var response = new JsonObject
            {
                ["chunk"] = new JsonArray(chunk.Select(e => (JsonNode)EventSerializer.Serialize(e, EventFormat.Client, now, room)).ToArray()),
                ["start"] = from ?? PaginationToken(room.Events.LastOrDefault()?.Depth ?? 0, position),
            };
            if (chunk.Count > 0)
            {
                var last = chunk[^1];
                response["end"] = backwards ? PaginationToken(last.Depth - 1, last.StreamOrdering - 1) : PaginationToken(last.Depth, last.StreamOrdering);
            }

            return response;
        }
    }

    public JsonObject GetEvent(Requester requester, string roomId, string eventId)
    {
        lock (_gate)
        {
            var (room, visibleUpTo) = RoomForReader(requester, roomId);
            return _eventsById.TryGetValue(eventId, out var e) && e.RoomId == roomId && e.StreamOrdering <= visibleUpTo
                ? EventSerializer.Serialize(e, EventFormat.Client, NowMs, room)
                : throw Errors.NotFound($"Could not find event {eventId}");
        }
    }

    public JsonArray GetState(Requester requester, string roomId)
    {
        lock (_gate)
        {
            var (room, _) = RoomForReader(requester, roomId);
            var now = NowMs;
            return new JsonArray(room.State.Values.OrderBy(e => e.StreamOrdering).Select(e => (JsonNode)EventSerializer.Serialize(e, EventFormat.Client, now)).ToArray());
        }
    }

    public JsonObject GetStateContent(Requester requester, string roomId, string type, string stateKey)
    {
        lock (_gate)
        {
            var (room, _) = RoomForReader(requester, roomId);
            return room.GetState(type, stateKey)?.VisibleContent() ?? throw Errors.NotFound("Event not found.");
        }
    }

    public JsonArray GetMembers(Requester requester, string roomId)
    {
        lock (_gate)
        {
            var (room, _) = RoomForReader(requester, roomId);
            var now = NowMs;
            return new JsonArray(room.State.Values.Where(e => e.Type == EventTypes.Member).OrderBy(e => e.StreamOrdering)
                .Select(e => (JsonNode)EventSerializer.Serialize(e, EventFormat.Client, now)).ToArray());
        }
    }

    public JsonObject GetJoinedMembers(Requester requester, string roomId)
    {
        lock (_gate)
        {
            var room = RoomForMember(requester, roomId);
            var joined = new JsonObject();
            foreach (var userId in room.MembersWith("join"))
            {
                var content = room.GetState(EventTypes.Member, userId)!.Content;
                joined[userId] = new JsonObject { ["avatar_url"] = content["avatar_url"]?.DeepClone(), ["display_name"] = content["displayname"]?.DeepClone() };
            }

            return joined;
        }
    }

    public JsonArray JoinedRooms(Requester requester)
    {
        lock (_gate)
        {
            return new JsonArray(_rooms.Values.Where(r => r.MembershipOf(requester.UserId) == "join").Select(r => (JsonNode)r.RoomId).ToArray());
        }
    }

    // With history_visibility "shared" a member sees the whole history, and a former member sees it up to leaving.
    private (Room Room, long VisibleUpTo) RoomForReader(Requester requester, string roomId)
    {
        var notVisible = Errors.Forbidden($"User {requester.UserId} not in room {roomId}, and room previews are disabled");
        var room = _rooms.GetValueOrDefault(roomId) ?? throw notVisible;
        var member = room.GetState(EventTypes.Member, requester.UserId);
        if (member?.Membership == "join")
        {
            return (room, long.MaxValue);
        }

        var everJoined = room.Events.Any(e => e.Type == EventTypes.Member && e.StateKey == requester.UserId && e.Membership == "join");
        return everJoined ? (room, member!.StreamOrdering) : throw notVisible;
    }

    private static string PaginationToken(long depth, long stream) =>
        string.Create(CultureInfo.InvariantCulture, $"t{depth}-{stream}_0_0_0_0_0_0_0_0");

    // Accepts both /messages tokens (t{depth}-{stream}_...) and sync tokens (s{stream}_...), as Synapse does.
    private static long ParsePaginationToken(string token)
    {
        var match = Regex.Match(token, @"^t\d+-(\d+)(?:_\d+)*$");
        return match.Success ? long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : SyncToken.Parse(token).Stream;
    }
}
