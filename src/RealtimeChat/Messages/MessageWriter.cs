using System.Threading.Channels;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;

namespace RealtimeChat.Messages;

/// <summary>
/// Group commit for new messages: sends that arrive while a transaction is being written wait for the next one, and
/// are all stored in it (a few statements for the whole batch, one commit). A sender's answer still comes only after
/// its message is committed. Conversations are split among the writers, so each conversation's sends are stored by
/// one writer in arrival order and writers never wait for each other's conversations. If a batch fails as a whole,
/// each of its sends is retried on its own, so one bad send only fails itself.
/// </summary>
public sealed class MessageWriter : BackgroundService
{
    private readonly ChatDatabase _database;
    private readonly ChatEventPipeline _events;
    private readonly MessageRenderer _renderer;
    private readonly ContentCipher _cipher;
    private readonly IMessageDelivery _delivery;
    private readonly TimeProvider _time;
    private readonly ILogger<MessageWriter> _logger;
    private readonly int _maxBatch;
    private readonly Channel<PendingSend>[] _queues;

    public MessageWriter(
        ChatDatabase database, ChatEventPipeline events, MessageRenderer renderer, ContentCipher cipher, IMessageDelivery delivery,
        TimeProvider time, IOptions<MessageOptions> options, ILogger<MessageWriter> logger)
    {
        (_database, _events, _renderer, _cipher, _delivery, _time, _logger) = (database, events, renderer, cipher, delivery, time, logger);
        _maxBatch = options.Value.MaxSendBatch;
        // SQLite has one writer at a time: a second batch would only wait for the first, half-filled.
        var writers = database.Provider == DatabaseProvider.Sqlite ? 1 : options.Value.SendWriters;
        _queues = Enumerable.Range(0, writers).Select(_ => Channel.CreateUnbounded<PendingSend>(new() { SingleReader = true })).ToArray();
    }

    /// <returns>The stored message; Created is false when <c>client_message_id</c> matched an earlier send.</returns>
    public Task<(MessageDto Message, bool Created)> SendAsync(Guid userId, Guid conversationId, NewMessage message)
    {
        var pending = new PendingSend(userId, conversationId, message);
        var queue = _queues[(uint)conversationId.GetHashCode() % (uint)_queues.Length];
        if (!queue.Writer.TryWrite(pending))
        {
            throw new ApiException(StatusCodes.Status503ServiceUnavailable, "shutting_down", "The service is shutting down; retry the send.");
        }
        return pending.Completion.Task;
    }

    public override Task StopAsync(CancellationToken cancellationToken)
    {
        // Requests have stopped by now; what is queued is still written before the writers exit.
        foreach (var queue in _queues)
        {
            queue.Writer.TryComplete();
        }
        return base.StopAsync(cancellationToken);
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(_queues.Select(queue => Task.Run(() => WriteLoopAsync(queue.Reader), CancellationToken.None)));

    private async Task WriteLoopAsync(ChannelReader<PendingSend> queue)
    {
        var batch = new List<PendingSend>(_maxBatch);
        while (await queue.WaitToReadAsync())
        {
            while (batch.Count < _maxBatch && queue.TryRead(out var pending))
            {
                batch.Add(pending);
            }
            await WriteAsync(batch);
            batch.Clear();
        }
    }

    private async Task WriteAsync(List<PendingSend> batch)
    {
        try
        {
            await StoreAsync(batch);
            ChatMetrics.SendBatchSize.Observe(batch.Count);
            return;
        }
        catch (Exception ex) when (batch.Count == 1 || ex is CommitUnconfirmedException)
        {
            // Storing again after a commit whose outcome is unknown could store messages twice; the clients'
            // retries with client_message_id can tell instead.
            foreach (var pending in batch)
            {
                pending.Completion.TrySetException(ex);
            }
            return;
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "A batch of {Count} sends failed as a whole; storing each on its own", batch.Count);
        }

        foreach (var pending in batch)
        {
            try
            {
                await StoreAsync([pending]);
            }
            catch (Exception ex)
            {
                pending.Completion.TrySetException(ex);
            }
        }
    }

    /// <summary>Stores a batch in one transaction; every send's outcome is given out only after the commit.</summary>
    private async Task StoreAsync(IReadOnlyList<PendingSend> batch)
    {
        await using var write = await _database.BeginWriteAsync(batch.Select(p => p.ConversationId).ToArray(), _events, CancellationToken.None);
        var checks = await CheckAsync(write, batch);
        var failures = new Exception?[batch.Count];
        var earlierIds = new Guid?[batch.Count];
        var accepted = new List<int>(batch.Count);
        var acceptedClientIds = new Dictionary<(Guid, Guid, string), Guid>();
        var newIds = new Guid[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            var (userId, conversationId, message) = (batch[i].UserId, batch[i].ConversationId, batch[i].Message);
            var clientKey = message.ClientMessageId is { } clientId ? (conversationId, userId, clientId) : default;
            if (checks[i].Role is null)
            {
                failures[i] = ApiException.ConversationNotFound();
            }
            else if (checks[i].ExistingId is { } existingId)
            {
                earlierIds[i] = existingId;
            }
            else if (message.ClientMessageId is not null && acceptedClientIds.TryGetValue(clientKey, out var sameBatchId))
            {
                // A concurrent retry of a send in this very batch gets that send's message.
                earlierIds[i] = sameBatchId;
            }
            else if (message.ReplyTo is not null && checks[i].ReplyTargetId is null)
            {
                failures[i] = ApiException.BadRequest("reply_target_not_found", "reply_to does not name a message of this conversation.");
            }
            else
            {
                newIds[i] = Guid.CreateVersion7();
                if (message.ClientMessageId is not null)
                {
                    acceptedClientIds[clientKey] = newIds[i];
                }
                accepted.Add(i);
            }
        }

        var messages = new Dictionary<Guid, MessageDto>();
        if (accepted.Count > 0)
        {
            foreach (var message in await InsertAsync(write, batch, accepted, newIds))
            {
                messages[message.Id] = message;
            }
        }
        var storedEarlier = earlierIds.OfType<Guid>().Where(id => !messages.ContainsKey(id)).ToArray();
        if (storedEarlier.Length > 0)
        {
            foreach (var message in await _renderer.LoadAsync(write.Connection, storedEarlier, write.Transaction))
            {
                messages[message.Id] = message;
            }
        }
        try
        {
            await write.CommitAsync();
        }
        catch (Exception ex)
        {
            throw new CommitUnconfirmedException(ex);
        }

        for (var i = 0; i < batch.Count; i++)
        {
            if (failures[i] is { } failure)
            {
                batch[i].Completion.TrySetException(failure);
            }
            else if (earlierIds[i] is { } earlierId)
            {
                batch[i].Completion.TrySetResult((messages[earlierId], false));
            }
            else
            {
                var message = messages[newIds[i]];
                ChatMetrics.MessagesSent.WithLabels(message.Type).Inc();
                batch[i].Completion.TrySetResult((message, true));
            }
        }
    }

    /// <summary>For each send: the sender's role (null if not a member), an earlier message with its client id, whether its reply target exists.</summary>
    private static async Task<SendCheck[]> CheckAsync(ChatTransaction write, IReadOnlyList<PendingSend> batch)
    {
        // One lookup per send through the unique indexes, written as scalar subqueries so that a young table's
        // statistics (a few hundred rows at the last ANALYZE) cannot turn them into scans of the whole messages table,
        // as a join or EXISTS (hashed subplan) would.
        const string lookups =
            """
            (SELECT role FROM conversation_members m WHERE m.conversation_id = s.conversation_id AND m.user_id = s.user_id) AS role,
            (SELECT id FROM messages earlier
              WHERE earlier.conversation_id = s.conversation_id AND earlier.sender_id = s.user_id
                AND earlier.client_message_id = s.client_message_id) AS existing_id,
            (SELECT id FROM messages target WHERE target.id = s.reply_to AND target.conversation_id = s.conversation_id) AS reply_target_id
            """;
        IEnumerable<SendCheck> rows;
        if (write.IsPostgres)
        {
            rows = await write.Connection.QueryAsync<SendCheck>(
                $"""
                SELECT s.n - 1 AS n,
                {lookups}
                  FROM unnest(@conversationIds, @userIds, @clientMessageIds, @replyTos)
                       WITH ORDINALITY AS s(conversation_id, user_id, client_message_id, reply_to, n)
                """,
                new
                {
                    conversationIds = batch.Select(p => p.ConversationId).ToArray(),
                    userIds = batch.Select(p => p.UserId).ToArray(),
                    clientMessageIds = batch.Select(p => p.Message.ClientMessageId).ToArray(),
                    replyTos = batch.Select(p => p.Message.ReplyTo).ToArray(),
                },
                write.Transaction);
        }
        else
        {
            // In-process: a query per send costs no round trip.
            var list = new List<SendCheck>(batch.Count);
            for (var n = 0; n < batch.Count; n++)
            {
                list.Add(await write.Connection.QuerySingleAsync<SendCheck>(
                    $"""
                    SELECT s.n,
                    {lookups}
                      FROM (SELECT @n AS n, @ConversationId AS conversation_id, @UserId AS user_id,
                                   @ClientMessageId AS client_message_id, @ReplyTo AS reply_to) AS s
                    """,
                    new { n, batch[n].ConversationId, batch[n].UserId, batch[n].Message.ClientMessageId, batch[n].Message.ReplyTo },
                    write.Transaction));
            }
            rows = list;
        }
        var checks = new SendCheck[batch.Count];
        foreach (var row in rows)
        {
            checks[row.N] = row;
        }
        return checks;
    }

    /// <summary>Stores the accepted sends (media rows, messages, their events) and returns them as clients see them.</summary>
    private async Task<List<MessageDto>> InsertAsync(ChatTransaction write, IReadOnlyList<PendingSend> batch, List<int> accepted, Guid[] newIds)
    {
        var now = _time.UtcNowMicros();
        var reservations = accepted
            .GroupBy(i => batch[i].ConversationId)
            .Select(g => (ConversationId: g.Key, Count: g.Count(), LastMessageId: newIds[g.Last()]))
            .ToList();
        var lastSeqs = await write.ReserveSequencesAsync(reservations, now);
        var nextSeqs = reservations.ToDictionary(r => r.ConversationId, r => lastSeqs[r.ConversationId] - r.Count + 1);

        var rows = new List<NewMessageRow>(accepted.Count);
        var dtos = new List<MessageDto>(accepted.Count);
        var appended = new List<ConversationEvent>(accepted.Count);
        foreach (var i in accepted)
        {
            var (userId, conversationId, message) = (batch[i].UserId, batch[i].ConversationId, batch[i].Message);
            var id = newIds[i];
            var seq = nextSeqs[conversationId]++;
            if (message.Media is { } media)
            {
                await write.ExecuteAsync(
                    """
                    INSERT INTO media (id, conversation_id, uploader_id, storage_key, content_type, size_bytes, duration_ms, file_name, wrapped_key, created_at)
                    VALUES (@Id, @conversationId, @userId, @StorageKey, @ContentType, @SizeBytes, @DurationMs, @FileName, @WrappedKey, @now)
                    """,
                    new { media.Id, conversationId, userId, media.StorageKey, media.ContentType, media.SizeBytes, media.DurationMs, media.FileName, media.WrappedKey, now });
            }
            rows.Add(new NewMessageRow(id, conversationId, seq, userId, message.Kind, _cipher.EncryptText(message.Content, id),
                message.Media?.Id, message.ReplyTo, message.ClientMessageId));
            // The answer is built from what was just written: nothing else can have touched the row yet.
            var dto = new MessageDto(id, conversationId, seq, userId, message.Kind, message.Content, message.Media?.ToDto(), message.ReplyTo,
                message.ClientMessageId, now, null, null, [], _delivery.OfNew(message.Origin));
            dtos.Add(dto);
            appended.Add(new ConversationEvent(conversationId, seq, ChatEventTypes.MessageNew, userId, now, dto, id, new MessageReference(id), message.Origin));
        }

        const string insert =
            """
            INSERT INTO messages (id, conversation_id, seq, sender_id, kind, content, media_id, reply_to, client_message_id, created_at)
            """;
        // Queued: it goes to the database with the events' rows and the outbox's, in one round trip.
        if (write.IsPostgres)
        {
            write.Queue(
                insert +
                """
                 SELECT r.id, r.conversation_id, r.seq, r.sender_id, r.kind, r.content, r.media_id, r.reply_to, r.client_message_id, @now
                   FROM unnest(@ids, @conversationIds, @seqs, @senderIds, @kinds, @contents, @mediaIds, @replyTos, @clientMessageIds)
                        AS r(id, conversation_id, seq, sender_id, kind, content, media_id, reply_to, client_message_id)
                """,
                new
                {
                    ids = rows.Select(r => r.Id).ToArray(),
                    conversationIds = rows.Select(r => r.ConversationId).ToArray(),
                    seqs = rows.Select(r => r.Seq).ToArray(),
                    senderIds = rows.Select(r => r.SenderId).ToArray(),
                    kinds = rows.Select(r => r.Kind).ToArray(),
                    contents = rows.Select(r => r.Content).ToArray(),
                    mediaIds = rows.Select(r => r.MediaId).ToArray(),
                    replyTos = rows.Select(r => r.ReplyTo).ToArray(),
                    clientMessageIds = rows.Select(r => r.ClientMessageId).ToArray(),
                    now,
                });
        }
        else
        {
            write.Queue(
                insert + " VALUES (@Id, @ConversationId, @Seq, @SenderId, @Kind, @Content, @MediaId, @ReplyTo, @ClientMessageId, @Now)",
                rows.Select(r => new { r.Id, r.ConversationId, r.Seq, r.SenderId, r.Kind, r.Content, r.MediaId, r.ReplyTo, r.ClientMessageId, Now = now }).ToList());
        }
        await write.AppendEventsAsync(appended);
        return dtos;
    }

    private sealed class CommitUnconfirmedException(Exception inner)
        : Exception("The database did not confirm the commit; the messages may or may not be stored.", inner);

    private sealed record PendingSend(Guid UserId, Guid ConversationId, NewMessage Message)
    {
        public TaskCompletionSource<(MessageDto Message, bool Created)> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private sealed class SendCheck
    {
        public int N { get; init; }
        public string? Role { get; init; }
        public Guid? ExistingId { get; init; }
        public Guid? ReplyTargetId { get; init; }
    }

    private sealed record NewMessageRow(
        Guid Id, Guid ConversationId, long Seq, Guid SenderId, string Kind, byte[] Content, Guid? MediaId, Guid? ReplyTo,
        string? ClientMessageId);
}
