using System.Text.Json;
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
        _ => null,
    };
}

/// <summary>
/// Records the Matrix-bound action of each app-made change in the change's own transaction (so it exists exactly
/// when the change does), and wakes the dispatcher after commit. Changes that came from Matrix are not sent back.
/// </summary>
public sealed class MatrixOutbox(MatrixDispatcher dispatcher) : ITransactionalEventSink, IChatEventPublisher
{
    public async Task OnAppendedAsync(ChatTransaction transaction, ConversationEvent evt)
    {
        if (transaction.Origin == EventOrigin.Matrix || MatrixActions.For(evt.Type) is not { } action)
        {
            return;
        }
        await transaction.ExecuteAsync(
            """
            INSERT INTO matrix_outbox (conversation_id, seq, action, actor_id, message_id, payload, txn_id, status, attempts, next_attempt_at, created_at)
            VALUES (@ConversationId, @Seq, @action, @ActorId, @MessageId, @payload, @txnId, 'pending', 0, @CreatedAt, @CreatedAt)
            """,
            new
            {
                evt.ConversationId,
                evt.Seq,
                action,
                evt.ActorId,
                evt.MessageId,
                payload = JsonSerializer.Serialize(evt.StoredPayload ?? evt.Data, ChatJson.Options),
                txnId = MatrixIds.TransactionId(evt.ConversationId, evt.Seq, action),
                evt.CreatedAt,
            });
    }

    public void Publish(ConversationEvent evt)
    {
        if (MatrixActions.For(evt.Type) is not null)
        {
            dispatcher.Wake();
        }
    }
}
