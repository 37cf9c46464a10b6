using System.Data.Common;
using RealtimeChat.Storage;

namespace RealtimeChat.Messages;

/// <summary>
/// Where messages stand on the network they are mirrored to (the API's <c>matrix</c> field). The bridge owns that
/// knowledge and provides it; Messages only shows it. Without a bridge there is nothing to show.
/// </summary>
public interface IMessageDelivery
{
    /// <summary>The state of a message stored now with this origin (before anything could have happened to it).</summary>
    MatrixDelivery? OfNew(EventOrigin origin);

    /// <summary>The state of stored messages, by id; messages that are not mirrored are absent.</summary>
    Task<IReadOnlyDictionary<Guid, MatrixDelivery>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> messageIds, DbTransaction? transaction);
}

public sealed class NoMessageDelivery : IMessageDelivery
{
    private static readonly IReadOnlyDictionary<Guid, MatrixDelivery> None = new Dictionary<Guid, MatrixDelivery>();

    public MatrixDelivery? OfNew(EventOrigin origin) => null;

    public Task<IReadOnlyDictionary<Guid, MatrixDelivery>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> messageIds, DbTransaction? transaction) =>
        Task.FromResult(None);
}
