using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>The Matrix-bound actions, as stored in <c>matrix_outbox.action</c>.</summary>
public static class MatrixActions
{
    public const string CreateRoom = "create_room";
    public const string Invite = "invite";
    public const string RemoveMember = "remove_member";
    public const string Rename = "rename";
    public const string SendMessage = "send_message";
    public const string Edit = "edit";
    public const string Redact = "redact";
    public const string React = "react";
    public const string Unreact = "unreact";
    public const string ReadReceipt = "read_receipt";

    /// <summary>Actions that post a timeline event, which carries the action's id so it can be found again (see <c>Portals</c>).</summary>
    public static bool PostsEvent(string action) => action is SendMessage or Edit or Redact or React or Unreact;

    public static string? For(string eventType) => eventType switch
    {
        ChatEventTypes.ConversationCreated => CreateRoom,
        ChatEventTypes.MemberAdded => Invite,
        ChatEventTypes.MemberRemoved => RemoveMember,
        ChatEventTypes.ConversationUpdated => Rename,
        ChatEventTypes.MessageNew => SendMessage,
        ChatEventTypes.MessageEdited => Edit,
        ChatEventTypes.MessageDeleted => Redact,
        ChatEventTypes.ReactionAdded => React,
        ChatEventTypes.ReactionRemoved => Unreact,
        ChatEventTypes.ReadUpdated => ReadReceipt,
        _ => null,
    };
}

/// <summary>
/// Records the Matrix-bound action of each app-made change in the change's own transaction (so it exists exactly
/// when the change does), and wakes the dispatcher after commit. Changes that came from Matrix are not sent back.
/// </summary>
public sealed class MatrixOutbox(OutboxWakeups wakeups) : ITransactionalEventSink, IChatEventPublisher
{
    public bool Records(string eventType, EventOrigin origin) => origin == EventOrigin.App && MatrixActions.For(eventType) is not null;

    public Task OnAppendedAsync(ChatTransaction transaction, IReadOnlyList<ConversationEvent> events)
    {
        var actions = events
            .Where(evt => Records(evt.Type, evt.Origin))
            .Select(evt =>
            {
                var action = MatrixActions.For(evt.Type)!;
                return new
                {
                    evt.ConversationId,
                    evt.Seq,
                    Action = action,
                    evt.ActorId,
                    evt.MessageId,
                    Payload = OutboxPayloads.Serialize(OutboxPayloads.From(evt.StoredPayload ?? evt.Data)),
                    TxnId = MatrixIds.TransactionId(evt.ConversationId, evt.Seq, action),
                    CreatedAt = evt.CreatedAt.ToUniversalTime(),
                };
            })
            .ToList();
        if (actions.Count == 0)
        {
            return Task.CompletedTask;
        }

        const string insert =
            """
            INSERT INTO matrix_outbox (conversation_id, seq, action, actor_id, message_id, payload, payload_version, txn_id, status, attempts, next_attempt_at, created_at)
            """;
        if (transaction.IsPostgres)
        {
            // Rows are inserted in array order, which is each conversation's seq order (the portal sends by seq).
            transaction.Queue(
                insert +
                """
                 SELECT a.conversation_id, a.seq, a.action, a.actor_id, a.message_id, a.payload, @version, a.txn_id, 'pending', 0, a.created_at, a.created_at
                   FROM unnest(@conversationIds, @seqs, @actions, @actorIds, @messageIds, @payloads, @txnIds, @createdAts)
                        AS a(conversation_id, seq, action, actor_id, message_id, payload, txn_id, created_at)
                """,
                new
                {
                    conversationIds = actions.Select(a => a.ConversationId).ToArray(),
                    seqs = actions.Select(a => a.Seq).ToArray(),
                    actions = actions.Select(a => a.Action).ToArray(),
                    actorIds = actions.Select(a => a.ActorId).ToArray(),
                    messageIds = actions.Select(a => a.MessageId).ToArray(),
                    payloads = actions.Select(a => a.Payload).ToArray(),
                    txnIds = actions.Select(a => a.TxnId).ToArray(),
                    createdAts = actions.Select(a => a.CreatedAt).ToArray(),
                    version = OutboxPayloads.Version,
                });
        }
        else
        {
            transaction.Queue(
                insert + " VALUES (@ConversationId, @Seq, @Action, @ActorId, @MessageId, @Payload, @Version, @TxnId, 'pending', 0, @CreatedAt, @CreatedAt)",
                actions.Select(a => new { a.ConversationId, a.Seq, a.Action, a.ActorId, a.MessageId, a.Payload, Version = OutboxPayloads.Version, a.TxnId, a.CreatedAt }).ToList());
        }
        return Task.CompletedTask;
    }

    public void Publish(ConversationEvent evt)
    {
        if (Records(evt.Type, evt.Origin))
        {
            wakeups.Wake(evt.ConversationId);
        }
    }
}

/// <summary>
/// Tells the dispatcher that a conversation has new actions. A go-between, because the dispatcher's portals write chat
/// changes (backfill reads, inbound events) whose pipeline holds the outbox: the outbox cannot hold the dispatcher.
/// </summary>
public sealed class OutboxWakeups
{
    private Action<Guid>? _listener;

    public void Listen(Action<Guid> listener) => _listener = listener;

    public void Wake(Guid conversationId) => _listener?.Invoke(conversationId);
}
