using System.Threading.Channels;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Matrix;

/// <summary>
/// App users' typing, shown in the room as their ghost's (appservice mode; one service account cannot type for
/// several people). Best effort, as typing is: notices queue in a small buffer that drops the overflow, and a failure
/// is only counted, never retried.
/// </summary>
public sealed class MatrixTypingRelay(
    MatrixActionSender sender, MatrixApi api, MatrixIds ids, IOptions<MatrixOptions> options, ILogger<MatrixTypingRelay> logger)
    : BackgroundService, Realtime.ITypingObserver
{
    // Clients repeat a notice every few seconds while typing (throttled per connection); this outlasts one gap.
    private static readonly TimeSpan TypingFor = TimeSpan.FromSeconds(6);

    private readonly Channel<(Guid UserId, Guid ConversationId)> _notices =
        Channel.CreateBounded<(Guid, Guid)>(new BoundedChannelOptions(256) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });

    public void Typing(Guid userId, Guid conversationId, Storage.EventOrigin origin)
    {
        if (origin.IsApp && options.Value.Mode == MatrixMode.Appservice)
        {
            _notices.Writer.TryWrite((userId, conversationId));
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await foreach (var (userId, conversationId) in _notices.Reader.ReadAllAsync(stoppingToken))
        {
            try
            {
                // Only rooms that exist, and only people whose ghost is in them (set up by the portal, in order).
                if (await sender.RoomIdAsync(conversationId, stoppingToken) is { } roomId && await sender.HasGhostAsync(userId, stoppingToken))
                {
                    await api.TypingAsync(roomId, ids.UserId(userId), TypingFor, stoppingToken);
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                MatrixMetrics.Errors.WithLabels(MatrixFailures.MetricLabel(ex)).Inc();
                logger.LogDebug("Typing notice of {UserId} in conversation {ConversationId} not relayed: {Error}", userId, conversationId, ex.Message);
            }
        }
    }
}
