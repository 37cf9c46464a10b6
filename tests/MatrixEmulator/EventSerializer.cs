using System.Text.Json.Nodes;

namespace MatrixEmulator;

internal enum EventFormat
{
    /// <summary>/messages, /event, /state: Synapse's "client v1" shape with room_id, user_id and age copied to the top level.</summary>
    Client,

    /// <summary>/sync timelines: no room_id, nothing copied out of unsigned.</summary>
    Sync,

    /// <summary>Appservice transactions: the client v1 shape plus invite_room_state.</summary>
    Appservice,
}

internal static class EventSerializer
{
    private static readonly string[] CopiedToTopLevel = ["age", "redacted_because", "replaces_state", "prev_content", "invite_room_state"];

    /// <param name="viewerToken">
    /// The access token of the /sync caller, to echo unsigned.transaction_id on its own events. Only /sync does this:
    /// the recorded /messages of a user's own events carried no transaction_id.
    /// </param>
    public static JsonObject Serialize(RoomEvent e, EventFormat format, long nowMs, Room? bundleFrom = null, string? viewerToken = null)
    {
        var json = new JsonObject { ["type"] = e.Type };
        if (format != EventFormat.Sync)
        {
            json["room_id"] = e.RoomId;
        }

        json["sender"] = e.Sender;
        json["content"] = e.VisibleContent();
        if (e.StateKey is not null)
        {
            json["state_key"] = e.StateKey;
        }

        if (e.Redacts is not null)
        {
            json["redacts"] = e.Redacts;
        }

        json["origin_server_ts"] = e.OriginServerTs;
        json["unsigned"] = Unsigned(e, format, nowMs, bundleFrom, viewerToken);
        json["event_id"] = e.EventId;
        foreach (var (key, value) in e.RawFields ?? [])
        {
            if (format != EventFormat.Sync || key != "room_id")
            {
                json[key] = value?.DeepClone();
            }
        }

        if (format != EventFormat.Sync)
        {
            json["user_id"] = e.Sender;
            var unsigned = (JsonObject)json["unsigned"]!;
            foreach (var key in CopiedToTopLevel)
            {
                if (unsigned[key] is { } value)
                {
                    json[key] = value.DeepClone();
                }
            }
        }

        return json;
    }

    /// <summary>The stripped form used in invite_room_state and /sync invite_state.</summary>
    public static JsonObject Stripped(RoomEvent e) => new()
    {
        ["content"] = e.VisibleContent(),
        ["sender"] = e.Sender,
        ["state_key"] = e.StateKey,
        ["type"] = e.Type,
    };

    private static JsonObject Unsigned(RoomEvent e, EventFormat format, long nowMs, Room? bundleFrom, string? viewerToken)
    {
        var unsigned = new JsonObject();
        if (e.RedactedBy is { } redaction)
        {
            unsigned["redacted_by"] = redaction.EventId;
            unsigned["redacted_because"] = Serialize(redaction, format, nowMs);
        }
        else
        {
            if (e.Replaces is { } previous)
            {
                unsigned["replaces_state"] = previous.EventId;
                unsigned["prev_content"] = previous.VisibleContent();
                unsigned["prev_sender"] = previous.Sender;
            }

            if (format == EventFormat.Appservice && e.InviteRoomState is not null)
            {
                unsigned["invite_room_state"] = e.InviteRoomState.DeepClone();
            }
        }

        unsigned["age"] = Math.Max(0, nowMs - e.OriginServerTs);
        if (viewerToken is not null && e.TransactionOwner == viewerToken && e.TransactionId is not null)
        {
            unsigned["transaction_id"] = e.TransactionId;
        }

        if (bundleFrom is not null && e.RedactedBy is null && !e.IsState && BundledRelations(e, bundleFrom) is { } relations)
        {
            unsigned["m.relations"] = relations;
        }

        return unsigned;
    }

    // Synapse 1.67 bundles reaction counts, the latest edit by the original sender, and references.
    private static JsonObject? BundledRelations(RoomEvent target, Room room)
    {
        var related = room.Events
            .Where(r => r.RedactedBy is null && r.Relation is { } rel && rel.EventId == target.EventId)
            .ToList();
        if (related.Count == 0)
        {
            return null;
        }

        var relations = new JsonObject();
        var annotations = related
            .Where(r => r.Relation!.Value.RelType == "m.annotation" && JsonText.String(r.Content["m.relates_to"]!["key"]) is not null)
            .GroupBy(r => (r.Type, Key: JsonText.String(r.Content["m.relates_to"]!["key"])!))
            .OrderByDescending(g => g.Count())
            .ThenBy(g => g.Min(r => r.StreamOrdering))
            .Select(g => (JsonNode)new JsonObject { ["type"] = g.Key.Type, ["key"] = g.Key.Key, ["count"] = g.Count() })
            .ToArray();
        if (annotations.Length > 0)
        {
            relations["m.annotation"] = new JsonObject { ["chunk"] = new JsonArray(annotations) };
        }

        var edit = related.LastOrDefault(r => r.Relation!.Value.RelType == "m.replace" && r.Sender == target.Sender && r.Type == target.Type);
        if (edit is not null)
        {
            relations["m.replace"] = new JsonObject
            {
                ["event_id"] = edit.EventId,
                ["origin_server_ts"] = edit.OriginServerTs,
                ["sender"] = edit.Sender,
            };
        }

        var references = related
            .Where(r => r.Relation!.Value.RelType == "m.reference")
            .Select(r => (JsonNode)new JsonObject { ["event_id"] = r.EventId })
            .ToArray();
        if (references.Length > 0)
        {
            relations["m.reference"] = new JsonObject { ["chunk"] = new JsonArray(references) };
        }

        return relations.Count > 0 ? relations : null;
    }
}
