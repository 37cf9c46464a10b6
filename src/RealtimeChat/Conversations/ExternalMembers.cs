using System.Data.Common;

namespace RealtimeChat.Conversations;

/// <summary>
/// Members who are people of another network (Matrix users in a mirrored room), as the bridge that brought them knows
/// them: the API shows their Matrix id and name. Without a bridge there are none.
/// </summary>
public interface IExternalMembers
{
    /// <summary>Those of <paramref name="userIds"/> who are external, by user id.</summary>
    Task<IReadOnlyDictionary<Guid, ExternalMember>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> userIds);
}

public sealed record ExternalMember(string MatrixUserId, string? DisplayName);

public sealed class NoExternalMembers : IExternalMembers
{
    private static readonly IReadOnlyDictionary<Guid, ExternalMember> None = new Dictionary<Guid, ExternalMember>();

    public Task<IReadOnlyDictionary<Guid, ExternalMember>> OfAsync(DbConnection connection, IReadOnlyCollection<Guid> userIds) => Task.FromResult(None);
}
