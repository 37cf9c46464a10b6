using System.Globalization;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>
/// Gets back an appservice transaction that Synapse created but never sent, by refusing the first push after a gap in
/// transaction ids.
/// <para>
/// Synapse 1.67 (<c>synapse/appservice/scheduler.py</c>) reads whether the appservice is up, creates the transaction,
/// and pushes it only if the state it read was up. Its recoverer marks the appservice up once it finds nothing unsent.
/// A transaction created between that last look and the state change is never pushed: later ones are, with higher ids,
/// and the stranded one goes out only when some later push fails and a new recoverer sends the oldest unsent first.
/// The Matrix message in it arrives late and out of order, or never. Any failed push starts a recoverer (this service
/// restarting, a 5xx, a network error), so the race is run at every deploy. A kill of Synapse with a push in flight
/// leaves that push's transaction behind the same way.
/// </para>
/// <para>
/// The remedy uses the recoverer itself: a push whose id is more than one past the last one seen is answered 503 once.
/// Synapse marks the appservice down and, 2 s later, its recoverer sends every unsent transaction oldest first: the
/// stranded one, then the refused one, then what came meanwhile. Nothing is lost and the order is Synapse's.
/// </para>
/// <para>
/// Ids need not be ours: Synapse numbers the transactions of every appservice of the homeserver from one sequence, and
/// a PostgreSQL sequence may skip a number. A refused id that comes back without its gap filled shows that; checks
/// then pause for <see cref="PauseAfterUnfilledGap"/>, so a homeserver shared with other appservices costs one 2 s
/// delay per pause (or none, with <c>Matrix:RecoverTransactionGaps=false</c>). An id below the last one is a restarted
/// homeserver numbering from 1 again (Synapse's SQLite store), and starts the count afresh. Ids that are not numbers
/// (other homeservers) are not checked.
/// </para>
/// </summary>
public sealed class AppserviceTransactionGaps(
    ChatDatabase database, IOptions<MatrixOptions> options, TimeProvider time, ILogger<AppserviceTransactionGaps> logger)
{
    private static readonly TimeSpan PauseAfterUnfilledGap = TimeSpan.FromMinutes(10);

    private sealed record Position
    {
        public long? LastTxnId { get; init; }
        public long? ChallengedTxnId { get; init; }
        public DateTimeOffset? GapChecksPausedUntil { get; init; }
        public long Version { get; init; }
    }

    /// <summary>Records the push; returns why it is refused, or null when it is to be handled.</summary>
    public async Task<string?> RefusalAsync(string txnId, CancellationToken cancellationToken)
    {
        if (!options.Value.RecoverTransactionGaps || !long.TryParse(txnId, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
        {
            return null;
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        // Nearly every push is the one after the last: one statement.
        if (await connection.ExecuteAsync(
                "UPDATE matrix_appservice_position SET last_txn_id = @id, version = version + 1 WHERE id = 1 AND last_txn_id = @previous",
                new { id, previous = id - 1 }) == 1)
        {
            return null;
        }

        while (true)
        {
            var position = await connection.QuerySingleAsync<Position>(
                "SELECT last_txn_id, challenged_txn_id, gap_checks_paused_until, version FROM matrix_appservice_position WHERE id = 1");
            var now = time.UtcNowMicros();
            var (next, verdict) = Decide(position, id, now);
            var changed = await connection.ExecuteAsync(
                """
                UPDATE matrix_appservice_position
                   SET last_txn_id = @LastTxnId, challenged_txn_id = @ChallengedTxnId, gap_checks_paused_until = @GapChecksPausedUntil,
                       version = version + 1
                 WHERE id = 1 AND version = @Version
                """,
                next with { Version = position.Version });
            if (changed == 0)
            {
                continue; // Another push (a retry running alongside, another instance) moved it: decide again.
            }

            switch (verdict)
            {
                case Verdict.Refused:
                    MatrixMetrics.TransactionsReceived.WithLabels("gap_refused").Inc();
                    logger.LogWarning(
                        "Appservice transaction {TxnId} came after {LastTxnId}: refused once, so that the homeserver's recoverer sends the missing one first",
                        id, position.LastTxnId);
                    return $"Transactions {position.LastTxnId + 1} to {id - 1} have not arrived; send the oldest unsent transaction first.";
                case Verdict.Unfilled:
                    MatrixMetrics.Errors.WithLabels("txn_gap_unfilled").Inc();
                    logger.LogWarning(
                        "Appservice transaction {TxnId} came again without the ones after {LastTxnId}: they were not for this appservice (another appservice shares the homeserver's numbering, or it skipped a number). Gap checks pause for {Pause}; set Matrix:RecoverTransactionGaps=false if other appservices share the homeserver",
                        id, position.LastTxnId, PauseAfterUnfilledGap);
                    return null;
                default:
                    return null;
            }
        }
    }

    private enum Verdict { Accepted, Refused, Unfilled }

    private static (Position Next, Verdict Verdict) Decide(Position position, long id, DateTimeOffset now)
    {
        var last = position.LastTxnId;
        if (last is null || id <= last + 1)
        {
            // The next id (perhaps one that filled a gap) or a retry keep a pending refusal; a restart's ids clear it.
            var challenged = position.ChallengedTxnId > id && id >= last ? position.ChallengedTxnId : null;
            return (position with { LastTxnId = id, ChallengedTxnId = challenged }, Verdict.Accepted);
        }
        if (position.ChallengedTxnId == id)
        {
            return (position with { LastTxnId = id, ChallengedTxnId = null, GapChecksPausedUntil = now + PauseAfterUnfilledGap }, Verdict.Unfilled);
        }
        if (position.GapChecksPausedUntil > now)
        {
            return (position with { LastTxnId = id, ChallengedTxnId = null }, Verdict.Accepted);
        }
        return (position with { ChallengedTxnId = id }, Verdict.Refused);
    }
}
