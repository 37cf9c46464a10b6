using System.Text.Json.Nodes;

namespace MatrixEmulator;

internal sealed class User(string userId, string localpart)
{
    public string UserId { get; } = userId;
    public string Localpart { get; } = localpart;
    public string? Password { get; set; }
    public string? DisplayName { get; set; }
    public string? AvatarUrl { get; set; }
    public bool IsAppserviceUser { get; init; }
    public List<JsonObject> Filters { get; } = [];
}

internal sealed record Session(string AccessToken, string UserId, string DeviceId);

/// <summary>A persisted event. Content is the original; redaction is applied when it is serialized.</summary>
internal sealed class RoomEvent
{
    public required string EventId { get; init; }
    public required string RoomId { get; init; }
    public required string Type { get; init; }
    public required string Sender { get; init; }
    public string? StateKey { get; init; }
    public required JsonObject Content { get; init; }
    public string? Redacts { get; init; }
    public required long OriginServerTs { get; init; }
    public required long StreamOrdering { get; init; }
    public required long Depth { get; init; }

    // What this state event replaced; Synapse reports it in unsigned.
    public RoomEvent? Replaces { get; init; }

    // Stripped state the invitee gets with an invite (only the appservice and the invitee see it).
    public JsonArray? InviteRoomState { get; init; }

    public RoomEvent? RedactedBy { get; set; }

    // Lets /sync echo unsigned.transaction_id to the client that sent the event.
    public string? TransactionId { get; init; }
    public string? TransactionOwner { get; init; }

    // Top-level fields of an event injected as if from federation, written out as they came (a number for redacts,
    // say), over what the typed properties would give.
    public JsonObject? RawFields { get; init; }

    public bool IsState => StateKey is not null;

    /// <summary>Null unless a string: events from federation may carry anything.</summary>
    public string? Membership => Type == EventTypes.Member ? JsonText.String(Content["membership"]) : null;

    // Synapse's relation_from_event: only a string rel_type and a string event_id make a relation.
    public (string RelType, string EventId)? Relation => RelationOf(Content);

    public static (string RelType, string EventId)? RelationOf(JsonObject content) =>
        content["m.relates_to"] is JsonObject rel && JsonText.String(rel["rel_type"]) is { } type && JsonText.String(rel["event_id"]) is { } target
            ? (type, target)
            : null;

    /// <summary>Content after the room version 9 redaction algorithm.</summary>
    public JsonObject VisibleContent()
    {
        if (RedactedBy is null)
        {
            return (JsonObject)Content.DeepClone();
        }

        string[] kept = Type switch
        {
            EventTypes.Member => ["membership", "join_authorised_via_users_server"],
            EventTypes.Create => ["creator"],
            EventTypes.JoinRules => ["join_rule", "allow"],
            EventTypes.PowerLevels => ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"],
            EventTypes.HistoryVisibility => ["history_visibility"],
            _ => [],
        };
        var pruned = new JsonObject();
        foreach (var key in kept)
        {
            if (Content[key] is { } value)
            {
                pruned[key] = value.DeepClone();
            }
        }

        return pruned;
    }
}

internal static class JsonText
{
    /// <summary>The value if it is a JSON string, else null (no exception for numbers, objects or arrays).</summary>
    public static string? String(JsonNode? node) => node is JsonValue value && value.TryGetValue<string>(out var text) ? text : null;

    /// <summary>The value if it is a JSON integer that fits a long, whatever .NET type holds it; else null.</summary>
    public static long? Integer(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == System.Text.Json.JsonValueKind.Number
        && long.TryParse(value.ToJsonString(), System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var number)
            ? number
            : null;
}

internal static class EventTypes
{
    public const string Create = "m.room.create";
    public const string Member = "m.room.member";
    public const string PowerLevels = "m.room.power_levels";
    public const string JoinRules = "m.room.join_rules";
    public const string HistoryVisibility = "m.room.history_visibility";
    public const string GuestAccess = "m.room.guest_access";
    public const string Name = "m.room.name";
    public const string Topic = "m.room.topic";
    public const string CanonicalAlias = "m.room.canonical_alias";
    public const string Avatar = "m.room.avatar";
    public const string Encryption = "m.room.encryption";
    public const string Message = "m.room.message";
    public const string Redaction = "m.room.redaction";
    public const string Reaction = "m.reaction";
}

internal sealed class Room(string roomId)
{
    public string RoomId { get; } = roomId;
    public List<RoomEvent> Events { get; } = [];
    public Dictionary<(string Type, string StateKey), RoomEvent> State { get; } = [];
    public HashSet<string> Aliases { get; } = [];

    // userId -> when the typing notification lapses.
    public Dictionary<string, DateTimeOffset> Typing { get; } = [];
    public long TypingSerial { get; set; }

    // (userId, receipt type) -> receipt; serial orders them against sync tokens.
    public Dictionary<(string UserId, string Type), Receipt> Receipts { get; } = [];

    public RoomEvent? GetState(string type, string stateKey = "") => State.GetValueOrDefault((type, stateKey));

    public string? MembershipOf(string userId) => GetState(EventTypes.Member, userId)?.Membership;

    public IEnumerable<string> MembersWith(string membership) =>
        State.Values.Where(e => e.Type == EventTypes.Member && e.Membership == membership).Select(e => e.StateKey!);

    public long PowerLevelOf(string userId)
    {
        var levels = GetState(EventTypes.PowerLevels)?.Content;
        if (levels is null)
        {
            // Before power levels exist only the creator may act (Synapse's auth rules).
            return GetState(EventTypes.Create)?.Sender == userId ? 100 : 0;
        }

        return AsLong(levels["users"]?[userId]) ?? LevelOf(levels, "users_default", 0);
    }

    public long RequiredLevel(string action, long fallback)
    {
        var levels = GetState(EventTypes.PowerLevels)?.Content;
        return levels is null ? fallback : LevelOf(levels, action, fallback);
    }

    public long RequiredLevelToSend(string type, bool isState)
    {
        var levels = GetState(EventTypes.PowerLevels)?.Content;
        if (levels is null)
        {
            return 0;
        }

        return AsLong(levels["events"]?[type]) ?? LevelOf(levels, isState ? "state_default" : "events_default", isState ? 50 : 0);
    }

    private static long LevelOf(JsonObject levels, string key, long fallback) => AsLong(levels[key]) ?? fallback;

    // Levels come from parsed JSON or from ints the emulator wrote itself; Synapse also accepts them as strings.
    private static long? AsLong(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<long>(out var l) => l,
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        JsonValue v when v.TryGetValue<string>(out var s) && long.TryParse(s, out var parsed) => parsed,
        _ => null,
    };
}

internal sealed record Receipt(string EventId, long Ts, long Serial);
