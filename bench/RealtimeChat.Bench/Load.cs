using System.Collections.Concurrent;
using System.Diagnostics;

namespace RealtimeChat.Bench;

/// <summary>What a load phase did.</summary>
public sealed class LoadResult
{
    public long Completed;
    public long Errors;
    public string? FirstError;
    public TimeSpan Elapsed;
    public Latency Latency { get; } = new();

    /// <summary>Per message number: when its request completed (Stopwatch timestamp), if tracked.</summary>
    public ConcurrentDictionary<long, long>? Ends;

    public double PerSecond => Completed / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

public static class Load
{
    private static long _numbers;

    public static long NextNumber() => Interlocked.Increment(ref _numbers);

    /// <summary>
    /// Runs <paramref name="workers"/> loops for <paramref name="duration"/>. With <paramref name="rate"/> = 0 each loop sends
    /// as fast as answers come back (closed loop, for throughput). With a rate the loops share a fixed schedule (open loop)
    /// and latency is measured from each request's scheduled time, so a stall counts against every request it delays
    /// (no coordinated omission). The action gets the message number and the timestamp to embed.
    /// </summary>
    public static async Task<LoadResult> RunAsync(int workers, double rate, TimeSpan duration, Func<int, long, long, CancellationToken, Task> action, bool trackEnds = false)
    {
        var result = new LoadResult { Ends = trackEnds ? new() : null };
        var start = Stopwatch.GetTimestamp();
        var end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        using var abort = new CancellationTokenSource(duration + TimeSpan.FromSeconds(60));
        var interval = rate > 0 ? workers / rate * Stopwatch.Frequency : 0;

        async Task Worker(int worker)
        {
            await Task.Yield();
            for (long k = 0; ; k++)
            {
                long intended;
                if (rate > 0)
                {
                    intended = start + (long)(worker / rate * Stopwatch.Frequency + k * interval);
                    if (intended >= end)
                    {
                        return;
                    }
                    var wait = intended - Stopwatch.GetTimestamp();
                    if (wait > Stopwatch.Frequency / 2000)
                    {
                        await Task.Delay(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency), abort.Token);
                    }
                }
                else
                {
                    intended = Stopwatch.GetTimestamp();
                    if (intended >= end)
                    {
                        return;
                    }
                }
                var number = NextNumber();
                try
                {
                    await action(worker, number, intended, abort.Token);
                    var done = Stopwatch.GetTimestamp();
                    result.Latency.RecordTicks(done - intended);
                    result.Ends?.TryAdd(number, done);
                    Interlocked.Increment(ref result.Completed);
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !abort.IsCancellationRequested)
                {
                    if (Interlocked.Increment(ref result.Errors) == 1)
                    {
                        result.FirstError = ex.Message;
                    }
                }
            }
        }

        await Task.WhenAll(Enumerable.Range(0, workers).Select(Worker));
        result.Elapsed = Stopwatch.GetElapsedTime(start);
        return result;
    }
}

/// <summary>Counts marked frames as they arrive and records how long after the (intended) send each arrived.</summary>
public sealed class Deliveries
{
    public long Count;
    public long LastArrival;
    public int LastLength;
    public Latency Latency { get; } = new();
    public ConcurrentDictionary<long, long>? Arrivals { get; init; }

    public void OnFrame(ReadOnlySpan<byte> frame, long now)
    {
        if (!Marker.TryParse(frame, out var sent, out var number))
        {
            return;
        }
        Latency.RecordTicks(now - sent);
        Arrivals?.TryAdd(number, now);
        LastLength = frame.Length;
        if (now > Interlocked.Read(ref LastArrival))
        {
            Interlocked.Exchange(ref LastArrival, now);
        }
        Interlocked.Increment(ref Count);
    }

    /// <summary>Waits until <paramref name="expected"/> deliveries arrived, or nothing new arrived for <paramref name="quiet"/>.</summary>
    public async Task SettleAsync(long expected, TimeSpan quiet)
    {
        var last = Interlocked.Read(ref Count);
        var since = Stopwatch.GetTimestamp();
        while (Interlocked.Read(ref Count) < expected)
        {
            await Task.Delay(50);
            var now = Interlocked.Read(ref Count);
            if (now != last)
            {
                last = now;
                since = Stopwatch.GetTimestamp();
            }
            else if (Stopwatch.GetElapsedTime(since) > quiet)
            {
                return;
            }
        }
    }

    /// <summary>Per message delivered and answered: how long after the HTTP answer the WebSocket event arrived (0 if before).</summary>
    public Latency BeyondSend(LoadResult sends)
    {
        var beyond = new Latency();
        if (Arrivals is null || sends.Ends is null)
        {
            return beyond;
        }
        foreach (var (number, arrived) in Arrivals)
        {
            if (sends.Ends.TryGetValue(number, out var end))
            {
                beyond.RecordTicks(Math.Max(0, arrived - end));
            }
        }
        return beyond;
    }
}

/// <summary>A dispatcher every watcher calls, so a phase can swap in its own counters.</summary>
public sealed class FrameSink
{
    private volatile Deliveries _current = new();

    public Deliveries Current => _current;

    public Deliveries Begin(bool trackArrivals = false) => _current = new Deliveries { Arrivals = trackArrivals ? new() : null };

    public void OnFrame(ReadOnlySpan<byte> frame, long now) => _current.OnFrame(frame, now);
}
