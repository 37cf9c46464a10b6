using Microsoft.Extensions.Options;

namespace RealtimeChat.Matrix;

/// <summary>How app ids map to Matrix ids, both ways.</summary>
public sealed class MatrixIds(IOptions<MatrixOptions> options)
{
    private MatrixOptions Settings => options.Value;

    public string BotUserId => $"@{Settings.SenderLocalpart}:{Settings.ServerName}";

    /// <summary>The Matrix user that speaks for an app user: a ghost in appservice mode, the seed's id in client mode.</summary>
    public string UserId(Guid appUserId) => Settings.Mode == MatrixMode.Appservice
        ? $"@{GhostLocalpart(appUserId)}:{Settings.ServerName}"
        : $"@{appUserId:N}:{Settings.ServerName}";

    public string GhostLocalpart(Guid appUserId) => $"{Settings.UserPrefix}{appUserId:N}";

    /// <summary>Deterministic, so a crash between createRoom and saving the mapping finds the same room again.</summary>
    public string RoomAliasLocalpart(Guid conversationId) => $"{Settings.AliasPrefix}{conversationId:N}";

    public string RoomAlias(Guid conversationId) => $"#{RoomAliasLocalpart(conversationId)}:{Settings.ServerName}";

    /// <summary>
    /// Fixed when the action is recorded; unique across the whole appservice (the homeserver dedupes sends per
    /// appservice, not per ghost), and across restarts, so a retry after a timeout or crash cannot post twice.
    /// </summary>
    public static string TransactionId(Guid conversationId, long seq, string action) => $"nova.{conversationId:N}.{seq}.{action}";

    /// <summary>The app user behind a ghost id or a seed-style id (<c>@{uuid hex}:{server}</c>), or null for anyone else.</summary>
    public Guid? AppUserId(string matrixUserId)
    {
        var suffix = $":{Settings.ServerName}";
        if (!matrixUserId.StartsWith('@') || !matrixUserId.EndsWith(suffix, StringComparison.Ordinal))
        {
            return null;
        }
        var localpart = matrixUserId[1..^suffix.Length];
        if (localpart.StartsWith(Settings.UserPrefix, StringComparison.Ordinal))
        {
            localpart = localpart[Settings.UserPrefix.Length..];
        }
        return localpart.Length == 32 && Guid.TryParseExact(localpart, "N", out var id) ? id : null;
    }

    /// <summary>
    /// Whether an event from this sender was sent by the bridge itself and must not come back as a new message:
    /// the bot and ghosts in appservice mode (nobody else can send as them), the service account in client mode.
    /// </summary>
    public bool IsEcho(string sender) => Settings.Mode == MatrixMode.Appservice
        ? sender == BotUserId || sender.StartsWith($"@{Settings.UserPrefix}", StringComparison.Ordinal) && sender.EndsWith($":{Settings.ServerName}", StringComparison.Ordinal)
        : sender == Settings.UserId;
}
