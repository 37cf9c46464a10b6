using System.Text.Json.Nodes;

namespace MatrixEmulator;

/// <summary>A snapshot of an event for test assertions.</summary>
/// <param name="Content">What clients see now (stripped if redacted).</param>
/// <param name="OriginalContent">What the sender sent, even after a redaction.</param>
public sealed record MatrixEvent(
    string EventId,
    string RoomId,
    string Type,
    string Sender,
    string? StateKey,
    JsonObject Content,
    JsonObject OriginalContent,
    long OriginServerTs,
    string? Redacts,
    string? RedactedBy,
    long StreamOrdering)
{
    /// <summary>The body if it is a string (null for a redacted event or one whose body is another JSON type).</summary>
    public string? Body => JsonText.String(Content["body"]);

    internal static MatrixEvent From(RoomEvent e) => new(
        e.EventId, e.RoomId, e.Type, e.Sender, e.StateKey, e.VisibleContent(), (JsonObject)e.Content.DeepClone(),
        e.OriginServerTs, e.Redacts, e.RedactedBy?.EventId, e.StreamOrdering);
}

public sealed record RoomSnapshot(
    string RoomId,
    string? Name,
    string? Creator,
    IReadOnlyList<string> Aliases,
    IReadOnlyList<string> Joined,
    IReadOnlyList<string> Invited,
    IReadOnlyList<string> TypingUsers);

internal sealed partial class HomeserverState
{
    public IReadOnlyList<RoomSnapshot> RoomSnapshots()
    {
        lock (_gate)
        {
            return _rooms.Values.Select(Snapshot).ToList();
        }
    }

    public RoomSnapshot? RoomSnapshot(string roomId)
    {
        lock (_gate)
        {
            return _rooms.TryGetValue(roomId, out var room) ? Snapshot(room) : null;
        }
    }

    public IReadOnlyList<MatrixEvent> EventsWhere(Func<RoomEvent, bool> predicate)
    {
        lock (_gate)
        {
            return _stream.Where(predicate).Select(MatrixEvent.From).ToList();
        }
    }

    public MatrixEvent? EventById(string eventId)
    {
        lock (_gate)
        {
            return _eventsById.TryGetValue(eventId, out var e) ? MatrixEvent.From(e) : null;
        }
    }

    public MediaItem? MediaById(string mediaId)
    {
        lock (_gate)
        {
            return _media.GetValueOrDefault(mediaId);
        }
    }

    private static RoomSnapshot Snapshot(Room room) => new(
        room.RoomId,
        JsonText.String(room.GetState(EventTypes.Name)?.Content["name"]),
        room.GetState(EventTypes.Create)?.Sender,
        room.Aliases.ToList(),
        room.MembersWith("join").ToList(),
        room.MembersWith("invite").ToList(),
        room.Typing.Where(t => t.Value > DateTimeOffset.UtcNow).Select(t => t.Key).ToList());
}
