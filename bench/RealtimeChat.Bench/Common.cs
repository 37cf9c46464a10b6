using System.Diagnostics;

namespace RealtimeChat.Bench;

public static class Common
{
    public static async Task<T[]> ParallelAsync<T>(int count, int parallel, Func<int, Task<T>> make)
    {
        var results = new T[count];
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, Math.Max(1, Math.Min(parallel, count))).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                results[i] = await make(i);
            }
        })));
        return results;
    }

    public static TimeSpan Seconds(double seconds) => TimeSpan.FromSeconds(seconds);

    public static double ClientCpuSeconds() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    public static double Mb(long bytes) => bytes / 1024.0 / 1024.0;

    public static void Say(TextWriter log, string text) => log.WriteLine($"   [{DateTime.UtcNow:HH:mm:ss}] {text}");

    /// <summary>Baseline of a request/response path: closed-loop rate and latency, and open-loop latency at a rate.</summary>
    public static async Task<(LoadResult Max, LoadResult AtRate)> BaselineRequestsAsync(ServerProcess baseline, int workers, double rate, TimeSpan duration, HttpMethod? method = null)
    {
        using var api = new ChatApi(baseline.BaseUrl, workers + 8);
        await Load.RunAsync(workers, 0, TimeSpan.FromSeconds(1), (_, n, ts, ct) => api.PostOkAsync("/send", null, ChatApi.MessageBody(Marker.Make(ts, n)), ct, method));
        var max = await Load.RunAsync(workers, 0, duration, (_, n, ts, ct) => api.PostOkAsync("/send", null, ChatApi.MessageBody(Marker.Make(ts, n)), ct, method));
        var atRate = rate > 0
            ? await Load.RunAsync(workers, rate, duration, (_, n, ts, ct) => api.PostOkAsync("/send", null, ChatApi.MessageBody(Marker.Make(ts, n)), ct, method))
            : new LoadResult();
        return (max, atRate);
    }

    /// <summary>Baseline of a delivery: an echo WebSocket round trip at the same rate.</summary>
    public static async Task<Deliveries> BaselineEchoAsync(ServerProcess baseline, int sockets, int workers, double rate, TimeSpan duration)
    {
        var sink = new FrameSink();
        var watchers = await Common.ParallelAsync(sockets, 16, i => Watcher.ConnectAsync(baseline.BaseUrl, "/ws?group=echo", null, sink.OnFrame, CancellationToken.None));
        try
        {
            sink.Begin();
            await Load.RunAsync(workers, rate > 0 ? rate : 0, TimeSpan.FromSeconds(1), (w, n, ts, ct) => watchers[w % sockets].SendAsync(ChatApi.MessageBody(Marker.Make(ts, n)), ct));
            var deliveries = sink.Begin();
            var sent = await Load.RunAsync(workers, rate, duration, (w, n, ts, ct) => watchers[w % sockets].SendAsync(ChatApi.MessageBody(Marker.Make(ts, n)), ct));
            await deliveries.SettleAsync(sent.Completed, TimeSpan.FromSeconds(3));
            return deliveries;
        }
        finally
        {
            await Task.WhenAll(watchers.Select(w => w.DisposeAsync().AsTask()));
        }
    }
}
