using System.Collections.Concurrent;

namespace RealtimeChat.Tests.Synapse;

/// <summary>A human's client long-polling <c>/sync</c> in the background, as Element does, keeping every
/// <c>m.room.message</c> it is shown. Rides out homeserver restarts and outages (retries until disposed).</summary>
public sealed class SyncWatcher : IAsyncDisposable
{
    private readonly MatrixHttpClient _user;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<(string RoomId, MatrixEvent Event)> _seen = new();
    private readonly Task _loop;

    private SyncWatcher(MatrixHttpClient user, string since)
    {
        _user = user;
        _loop = LoopAsync(since);
    }

    /// <summary>Starts watching from now: only events after this call are collected.</summary>
    public static async Task<SyncWatcher> StartAsync(MatrixHttpClient user)
    {
        var (_, since) = await user.SyncAsync(null, TimeSpan.Zero, """{"room":{"timeline":{"limit":1}}}""");
        return new SyncWatcher(user, since);
    }

    public IReadOnlyList<(string RoomId, MatrixEvent Event)> Messages => [.. _seen];

    public int Count => _seen.Count;

    private async Task LoopAsync(string since)
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                var (body, next) = await _user.SyncAsync(since, TimeSpan.FromSeconds(5)).WaitAsync(_stop.Token);
                foreach (var item in MatrixHttpClient.SyncTimeline(body).Where(x => x.Event.Type == "m.room.message"))
                {
                    _seen.Enqueue(item);
                }
                since = next;
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or MatrixRequestException or TaskCanceledException)
            {
                // Synapse is down or restarting: try again shortly, from the same token.
                await Task.Delay(200, CancellationToken.None);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }
        _stop.Dispose();
    }
}
