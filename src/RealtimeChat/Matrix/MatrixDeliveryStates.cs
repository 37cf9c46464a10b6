using System.Data.Common;
using Dapper;
using RealtimeChat.Messages;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// What the API shows of a message's way to Matrix: in the room (its event, in <c>matrix_events</c>), else waiting or
/// parked (its send_message action in the outbox).
/// </summary>
public sealed class MatrixDeliveryStates(MatrixOutbox outbox) : IMessageDelivery
{
    public MatrixDelivery? OfNew(EventOrigin origin) =>
        origin.ExternalId is { } eventId ? new MatrixDelivery(MatrixDeliveryState.Sent, eventId, null)
        : outbox.Records(ChatEventTypes.MessageNew, origin) ? new MatrixDelivery(MatrixDeliveryState.Pending, null, null)
        : null;

    public async Task<IReadOnlyDictionary<Guid, MatrixDelivery>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> messageIds, DbTransaction? transaction)
    {
        var states = (await MatrixEvents.EventsOfMessagesAsync(connection, messageIds, transaction))
            .ToDictionary(e => e.Key, e => new MatrixDelivery(MatrixDeliveryState.Sent, e.Value, null));
        var waiting = messageIds.Where(id => !states.ContainsKey(id)).ToArray();
        if (waiting.Length == 0)
        {
            return states;
        }
        var actions = await connection.QueryAsync<(Guid MessageId, string Status, string? LastError)>(
            $"SELECT message_id, status, last_error FROM matrix_outbox WHERE action = @sendMessage AND {SqlDialect.InList(connection, "message_id", "ids")}",
            new { sendMessage = MatrixActions.SendMessage, ids = waiting }, transaction);
        foreach (var (messageId, status, error) in actions)
        {
            // Sent with no event: deleted before it reached Matrix, so nothing of it is there.
            if (status is "pending" or "failed")
            {
                states[messageId] = new MatrixDelivery(status == "pending" ? MatrixDeliveryState.Pending : MatrixDeliveryState.Failed, null, error);
            }
        }
        return states;
    }
}
