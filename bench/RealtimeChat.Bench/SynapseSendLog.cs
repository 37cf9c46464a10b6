using System.Globalization;
using System.Text.RegularExpressions;

namespace RealtimeChat.Bench;

/// <summary>
/// Synapse's own view of a phase, from its access log (homeserver.log, one "Processed request" line per request when it
/// ends, with its duration): how fast it completed the <c>PUT …/send/m.room.message</c> of one sender namespace, how
/// long each took inside Synapse, and how long each room waited between the end of one send and the start of its next.
/// A bridge slower than a direct client because Synapse takes longer per request shows in the second; because the
/// bridge is slow to send the next event, in the third.
/// </summary>
public sealed partial class SynapseSendLog
{
    private readonly List<Send> _sends;

    private SynapseSendLog(List<Send> sends) => _sends = sends;

    /// <summary>Reads the log and the files it was rotated into (Synapse's default log configuration starts a new one at
    /// midnight, local time).</summary>
    public static SynapseSendLog Read(string homeserverLog)
    {
        var sends = new List<Send>();
        var current = Path.GetFullPath(homeserverLog);
        // "name.*" matches "name" itself too.
        var rotated = Directory.GetFiles(Path.GetDirectoryName(current)!, Path.GetFileName(current) + ".*").Where(f => f != current);
        foreach (var line in rotated.Append(current).SelectMany(File.ReadLines))
        {
            if (Line().Match(line) is not { Success: true } m)
            {
                continue;
            }
            // Python's logging writes local time; this process shares the machine's time zone.
            var end = DateTime.ParseExact(m.Groups["time"].Value, "yyyy-MM-dd HH:mm:ss,fff", CultureInfo.InvariantCulture, DateTimeStyles.AssumeLocal).ToUniversalTime();
            var duration = TimeSpan.FromSeconds(double.Parse(m.Groups["seconds"].Value, CultureInfo.InvariantCulture));
            sends.Add(new Send(m.Groups["user"].Value, m.Groups["room"].Value, end - duration, end));
        }
        return new SynapseSendLog(sends);
    }

    /// <summary>The sends of users whose id starts with <paramref name="userPrefix"/> that ended within the windows (one
    /// phase's rounds), pooled: sends per second over the windows' spans, gaps only between sends of one window.</summary>
    public Figures Between(IEnumerable<(DateTime From, DateTime To)> windows, string userPrefix)
    {
        var (count, spans, gaps) = (0, 0.0, new List<double>());
        var durations = new List<double>();
        foreach (var (fromUtc, toUtc) in windows)
        {
            var sends = _sends.Where(s => s.End >= fromUtc && s.End <= toUtc && s.User.StartsWith(userPrefix, StringComparison.Ordinal)).OrderBy(s => s.End).ToList();
            durations.AddRange(sends.Select(s => (s.End - s.Start).TotalMilliseconds));
            if (sends.Count < 2)
            {
                continue;
            }
            count += sends.Count - 1;
            spans += (sends[^1].End - sends[0].End).TotalSeconds;
            gaps.AddRange(sends.GroupBy(s => s.Room)
                .Select(room => room.OrderBy(s => s.Start).ToList())
                .SelectMany(room => room.Zip(room.Skip(1), (a, b) => (b.Start - a.End).TotalMilliseconds)));
        }
        return new Figures(
            durations.Count,
            spans > 0 ? count / spans : 0,
            durations.Count > 0 ? durations.Average() : 0,
            gaps.Count > 0 ? gaps.Average() : 0);
    }

    public sealed record Figures(int Sends, double PerSecond, double RequestMs, double GapMs);

    private sealed record Send(string User, string Room, DateTime Start, DateTime End);

    [GeneratedRegex(@"^(?<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - synapse\.access\.\S+ .* - \{(?<user>[^}]*)\} Processed request: (?<seconds>[\d.]+)sec/.*""PUT /_matrix/client/v3/rooms/(?<room>[^/]+)/send/m\.room\.message/")]
    private static partial Regex Line();
}
