using System.Diagnostics;

namespace RealtimeChat.Bench;

/// <summary>
/// The storage's own flush latency, measured beside the service: 8 KiB written and fsync'd at a fixed rate in the temp
/// directory, the filesystem that holds the bench's PostgreSQL cluster (scripts/postgres.sh) and the service's data
/// directory. A durable commit waits for such a flush, so a victim send can never be faster than this probe's tail:
/// when the probe stalls in a quiet phase as much as under a flood, a slow send is the disk's, not the attacker's.
/// </summary>
public sealed class DiskFlushProbe : IDisposable
{
    /// <summary>A flush slower than this is a stall: the probe's own flushes take about half a millisecond.</summary>
    public static readonly TimeSpan StallThreshold = TimeSpan.FromMilliseconds(20);

    private readonly Lock _stallsLock = new();
    private readonly List<(long Start, long End)> _stalls = [];
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"chat-bench-flush-{Guid.NewGuid():N}");
    private readonly FileStream _file;
    private readonly Thread _thread;
    private readonly double _rate;
    private volatile Latency _latency = new();
    private volatile bool _stopping;

    public DiskFlushProbe(double rate)
    {
        _rate = rate;
        _file = new FileStream(_path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
        _file.SetLength(16 << 20);
        _file.Flush(flushToDisk: true);
        // Its own thread: the client's thread pool is busy with the flood and must not delay the probe.
        _thread = new Thread(Run) { IsBackground = true, Name = "disk flush probe" };
        _thread.Start();
    }

    /// <summary>Starts a new window and returns the latencies of the one that ends.</summary>
    public Latency Restart() => Interlocked.Exchange(ref _latency, new Latency());

    /// <summary>
    /// Whether a flush of the probe stalled at any time between two Stopwatch timestamps: a durable commit in that
    /// interval waited for the same storage.
    /// </summary>
    public bool StalledDuring(long start, long end) => StallsDuring(start, end).Count > 0;

    /// <summary>The stalls that overlapped the interval between two Stopwatch timestamps, each its whole length.</summary>
    public List<TimeSpan> StallsDuring(long start, long end)
    {
        lock (_stallsLock)
        {
            return [.. _stalls.Where(s => s.Start < end && s.End > start).Select(s => Stopwatch.GetElapsedTime(s.Start, s.End))];
        }
    }

    private void Run()
    {
        var block = new byte[8192];
        Random.Shared.NextBytes(block);
        var interval = TimeSpan.FromSeconds(1 / _rate);
        for (long n = 0; !_stopping; n++)
        {
            var start = Stopwatch.GetTimestamp();
            RandomAccess.Write(_file.SafeFileHandle, block, n % 2048 * block.Length);
            _file.Flush(flushToDisk: true);
            var end = Stopwatch.GetTimestamp();
            var elapsed = Stopwatch.GetElapsedTime(start, end);
            _latency.RecordTicks(end - start);
            if (elapsed > StallThreshold)
            {
                lock (_stallsLock)
                {
                    _stalls.Add((start, end));
                }
            }
            if (elapsed < interval)
            {
                Thread.Sleep(interval - elapsed);
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _thread.Join();
        _file.Dispose();
    }
}
