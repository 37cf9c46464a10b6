using System.Collections.Concurrent;
using System.Data.Common;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>The right to drive one portal, held by one process; <see cref="Token"/> fences out a previous holder.</summary>
/// <param name="Fresh">Taken over (or first taken by this process): whatever the previous holder sent but did not record must be looked for.</param>
public sealed record PortalLease(Guid ConversationId, long Token, bool Fresh);

/// <summary>
/// Several instances may share one database (a Kubernetes rolling restart runs two for a while): each portal is driven
/// by exactly one of them at a time. A lease lasts <c>Matrix:PortalLease</c> and is renewed while its holder works;
/// a holder that dies loses it when it runs out, a holder that stops gives its leases back at once. The token grows
/// with every change of holder, and outcomes are recorded only under the token they were sent with.
/// </summary>
public sealed class PortalLeases(ChatDatabase database, IOptions<MatrixOptions> options, TimeProvider time)
{
    // The process, not the host name: two instances may run on one host, and a restarted process must look again.
    private readonly string _owner = $"{Environment.MachineName}/{Guid.NewGuid():N}";
    // The token under which each portal was last reconciled with the homeserver.
    private readonly ConcurrentDictionary<Guid, long> _reconciled = new();
    // Leases this process holds, and until when it counts on them without asking the database: a third of the lease
    // short of its end, for the clocks of instances that disagree a little.
    private readonly ConcurrentDictionary<Guid, (long Token, DateTimeOffset TrustedUntil)> _held = new();

    private TimeSpan Duration => options.Value.PortalLease;

    /// <returns>The lease, or null while another process holds it.</returns>
    public async Task<PortalLease?> AcquireAsync(Guid conversationId, CancellationToken cancellationToken)
    {
        var now = time.UtcNowMicros();
        // Drains come one after another under load: a lease with most of its time left is not written again (each write
        // is a commit the database must make durable); recording renews it anyway.
        if (_held.TryGetValue(conversationId, out var held) && held.TrustedUntil - now > Duration / 3)
        {
            return Lease(conversationId, held.Token);
        }
        await using var connection = await database.OpenAsync(cancellationToken);
        var token = await connection.QuerySingleOrDefaultAsync<long?>(
            """
            INSERT INTO matrix_portal_leases (conversation_id, owner, token, expires_at) VALUES (@conversationId, @owner, 1, @expires)
            ON CONFLICT (conversation_id) DO UPDATE
               SET token = CASE WHEN matrix_portal_leases.owner = excluded.owner THEN matrix_portal_leases.token ELSE matrix_portal_leases.token + 1 END,
                   owner = excluded.owner, expires_at = excluded.expires_at
             WHERE matrix_portal_leases.owner = excluded.owner OR matrix_portal_leases.expires_at < @now
            RETURNING token
            """,
            new { conversationId, owner = _owner, expires = now + Duration, now });
        if (token is not { } acquired)
        {
            _held.TryRemove(conversationId, out _);
            _reconciled.TryRemove(conversationId, out _);
            return null;
        }
        _held[conversationId] = (acquired, now + Duration * 2 / 3);
        return Lease(conversationId, acquired);
    }

    private PortalLease Lease(Guid conversationId, long token) =>
        new(conversationId, token, Fresh: !_reconciled.TryGetValue(conversationId, out var known) || known != token);

    /// <summary>What a previous holder may have left unrecorded has been looked for: later drains under this token need not.</summary>
    public void Reconciled(PortalLease lease) => _reconciled[lease.ConversationId] = lease.Token;

    /// <summary>Whatever happened is unknown (e.g. outcomes could not be recorded): the next drain reconciles as after a takeover.</summary>
    public void Forget(Guid conversationId) => _reconciled.TryRemove(conversationId, out _);

    /// <summary>When another process's lease on the portal runs out (to look again then).</summary>
    public async Task<DateTimeOffset?> HeldUntilAsync(Guid conversationId, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        return await connection.QuerySingleOrDefaultAsync<DateTimeOffset?>(
            "SELECT expires_at FROM matrix_portal_leases WHERE conversation_id = @conversationId", new { conversationId });
    }

    private const string RenewSql =
        """
        UPDATE matrix_portal_leases SET expires_at = @expires
         WHERE conversation_id = @ConversationId AND owner = @owner AND token = @Token
        """;

    /// <summary>
    /// Renews the lease inside <paramref name="transaction"/> (on PostgreSQL the row stays locked until it commits, so a
    /// takeover cannot slip in between), or throws if it was lost: then nothing of the transaction may be kept.
    /// </summary>
    /// <returns>When it was renewed: pass it to <see cref="Renewed"/> once <paramref name="transaction"/> commits.</returns>
    public async Task<DateTimeOffset> RenewAsync(DbConnection connection, DbTransaction? transaction, PortalLease lease)
    {
        var now = time.UtcNowMicros();
        if (await connection.ExecuteAsync(RenewSql, RenewParameters(lease, now), transaction) == 0)
        {
            Lost(lease);
        }
        // Trusted only once the renewal commits; until then the earlier time stands, which is shorter.
        if (transaction is null)
        {
            Renewed(lease, now);
        }
        return now;
    }

    /// <summary>
    /// As <see cref="RenewAsync"/>, as the first statement of a batch that runs under the lease: once the batch ran,
    /// <see cref="EnsureRenewed"/> throws if the lease was lost, before anything of its transaction is committed.
    /// </summary>
    public BatchedRenewal Renew(StatementBatch batch, PortalLease lease)
    {
        var now = time.UtcNowMicros();
        return new BatchedRenewal(lease, now, batch.Add(RenewSql, RenewParameters(lease, now)));
    }

    /// <returns>When it was renewed: pass it to <see cref="Renewed"/> once the batch's transaction commits.</returns>
    public DateTimeOffset EnsureRenewed(BatchedRenewal renewal, int[] affected)
    {
        if (affected[renewal.Statement] == 0)
        {
            Lost(renewal.Lease);
        }
        return renewal.At;
    }

    private object RenewParameters(PortalLease lease, DateTimeOffset now) =>
        new { lease.ConversationId, lease.Token, owner = _owner, expires = now + Duration };

    private void Lost(PortalLease lease)
    {
        _held.TryRemove(lease.ConversationId, out _);
        _reconciled.TryRemove(lease.ConversationId, out _);
        throw new PortalLeaseLostException(lease.ConversationId);
    }

    /// <summary>A renewal made in a transaction has committed.</summary>
    public void Renewed(PortalLease lease, DateTimeOffset at) => _held[lease.ConversationId] = (lease.Token, at + Duration * 2 / 3);

    /// <summary>Whether this process may still act on the lease without renewing it first.</summary>
    public bool Trusted(PortalLease lease) =>
        _held.TryGetValue(lease.ConversationId, out var held) && held.Token == lease.Token && held.TrustedUntil - time.UtcNowMicros() > Duration / 3;

    /// <summary>Renews the lease when what this process counts on of it is running out (long drains).</summary>
    public Task RenewIfDueAsync(DbConnection connection, PortalLease lease) =>
        Trusted(lease) ? Task.CompletedTask : RenewAsync(connection, null, lease);

    /// <summary>At shutdown: the next instance takes our portals over at once instead of when the leases run out.</summary>
    public async Task ReleaseAllAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        _held.Clear();
        await connection.ExecuteAsync("DELETE FROM matrix_portal_leases WHERE owner = @owner", new { owner = _owner });
        _reconciled.Clear();
    }
}

/// <summary>A renewal waiting in a <see cref="StatementBatch"/>.</summary>
public sealed record BatchedRenewal(PortalLease Lease, DateTimeOffset At, int Statement);

public sealed class PortalLeaseLostException(Guid conversationId)
    : Exception($"Another instance took over the Matrix portal of conversation {conversationId}.");
