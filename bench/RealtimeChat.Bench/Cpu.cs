using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;

namespace RealtimeChat.Bench;

/// <summary>
/// Where the machine's CPU went during a phase, in cores: the whole machine (/proc/stat), the service process,
/// every process named postgres, this (client) process, and the rest. Client and server share the machine, so
/// this shows what a figure was limited by, and whether something else was running.
/// </summary>
public sealed class CpuMeter
{
    private static readonly double TicksPerSecond = 100;
    private readonly int _servicePid;
    private readonly (long Busy, long Total) _machine;
    private readonly double _service, _client;
    private readonly Dictionary<int, double> _postgres;
    private readonly long _start = Stopwatch.GetTimestamp();

    public CpuMeter(int servicePid)
    {
        _servicePid = servicePid;
        _machine = Machine();
        _service = ProcessSeconds(servicePid);
        _postgres = PostgresSeconds();
        _client = Common.ClientCpuSeconds();
    }

    public CpuUse Stop()
    {
        var seconds = Stopwatch.GetElapsedTime(_start).TotalSeconds;
        var machine = Machine();
        var total = machine.Total - _machine.Total;
        var busy = total == 0 ? 0 : (double)(machine.Busy - _machine.Busy) / total * Environment.ProcessorCount;
        var service = (ProcessSeconds(_servicePid) - _service) / seconds;
        // Per process, so a postgres process that exits meanwhile (another cluster stopping) does not count negative.
        var postgres = PostgresSeconds().Sum(p => p.Value - _postgres.GetValueOrDefault(p.Key)) / seconds;
        var client = (Common.ClientCpuSeconds() - _client) / seconds;
        // Some sandboxes update /proc/stat lazily, so the machine's reading can come out below what its processes
        // used; the processes' own counters are exact, so the machine is at least their sum.
        var parts = service + postgres + client;
        return new CpuUse(Math.Max(busy, parts), service, postgres, client, Math.Max(0, busy - parts));
    }

    private static (long Busy, long Total) Machine()
    {
        var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray();
        var idle = fields[3] + fields[4];
        var total = fields.Take(8).Sum();
        return (total - idle, total);
    }

    public static double ProcessSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
        {
            return 0;
        }
    }

    private static Dictionary<int, double> PostgresSeconds()
    {
        var sum = new Dictionary<int, double>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            var name = Path.GetFileName(dir);
            if (!int.TryParse(name, out var pid))
            {
                continue;
            }
            try
            {
                if (File.ReadAllText(Path.Combine(dir, "comm")).Trim() == "postgres")
                {
                    sum[pid] = ProcessSeconds(pid);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // exited meanwhile
            }
        }
        return sum;
    }
}

/// <summary>Cores used: machine, service, postgres (all clusters), client (this process), other (kernel network softirq time not charged to a process, and anything else running).</summary>
public sealed record CpuUse(double Machine, double Service, double Postgres, double Client, double Other)
{
    public override string ToString() => $"{Machine:0.00} = svc {Service:0.00} + pg {Postgres:0.00} + client {Client:0.00} + other {Other:0.00}";

    public JsonObject ToJson() => new()
    {
        ["machine"] = Fmt.R(Machine, 2),
        ["service"] = Fmt.R(Service, 2),
        ["postgres"] = Fmt.R(Postgres, 2),
        ["client"] = Fmt.R(Client, 2),
        ["other"] = Fmt.R(Other, 2),
    };
}
