using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace RealtimeChat.Bench;

/// <summary>One scenario's figures: a table for people and one JSON line for tools.</summary>
public sealed class Report(string scenario)
{
    private readonly List<TableRow> _rows = [];

    public string Scenario { get; } = scenario;

    public JsonObject Parameters { get; } = [];

    public JsonObject Figures { get; } = [];

    public JsonObject Baseline { get; } = [];

    public JsonObject Ratios { get; } = [];

    public List<string> Notes { get; } = [];

    /// <summary>A table row; <paramref name="baseline"/> and the ratio are shown when given.</summary>
    public void Row(string metric, string value, string? baseline = null, double? ratio = null, string? target = null, bool? met = null) =>
        _rows.Add(new TableRow(metric, value, baseline ?? "", ratio is { } r && double.IsFinite(r) ? r.ToString("0.00", CultureInfo.InvariantCulture) + "x" : "", target ?? "", met switch { true => "yes", false => "NO", null => "" }));

    public static double Ratio(double service, double baseline) => baseline == 0 ? double.NaN : service / baseline;

    public JsonObject ToJson() => new()
    {
        ["scenario"] = Scenario,
        ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
        ["machine"] = new JsonObject
        {
            ["cores"] = Environment.ProcessorCount,
            ["memory_gb"] = Math.Round(MachineMemoryGb(), 1),
            ["os"] = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
            ["runtime"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
        },
        ["parameters"] = Parameters.DeepClone(),
        ["figures"] = Figures.DeepClone(),
        ["baseline"] = Baseline.DeepClone(),
        ["ratios"] = Ratios.DeepClone(),
        ["notes"] = new JsonArray([.. Notes.Select(n => (JsonNode)JsonValue.Create(n)!)]),
    };

    public void Write(TextWriter output)
    {
        output.WriteLine();
        output.WriteLine($"== {Scenario}: {string.Join(", ", Parameters.Select(p => $"{p.Key}={p.Value?.ToJsonString().Trim('"')}"))}");
        output.WriteLine($"   client and server share this machine ({Environment.ProcessorCount} cores); latencies p50 / p99 / p99.9 / max in ms");
        var header = new TableRow("metric", "service", "baseline", "ratio", "target", "met");
        var all = _rows.Prepend(header).ToList();
        int[] widths =
        [
            all.Max(r => r.Metric.Length), all.Max(r => r.Value.Length), all.Max(r => r.Baseline.Length),
            all.Max(r => r.Ratio.Length), all.Max(r => r.Target.Length), all.Max(r => r.Met.Length),
        ];
        string Line(TableRow r) => $"| {r.Metric.PadRight(widths[0])} | {r.Value.PadLeft(widths[1])} | {r.Baseline.PadLeft(widths[2])} | {r.Ratio.PadLeft(widths[3])} | {r.Target.PadRight(widths[4])} | {r.Met.PadRight(widths[5])} |";
        output.WriteLine(Line(header));
        output.WriteLine("|" + string.Join("|", widths.Select((w, i) => new string('-', w + 2) is var d && i is 1 or 2 or 3 ? d[..^1] + ":" : d)) + "|");
        foreach (var row in _rows)
        {
            output.WriteLine(Line(row));
        }
        foreach (var note in Notes)
        {
            output.WriteLine($"   note: {note}");
        }
        output.WriteLine(ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
        output.Flush();
    }

    private static double MachineMemoryGb()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0 / 1024.0;
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    private sealed record TableRow(string Metric, string Value, string Baseline, string Ratio, string Target, string Met);
}

public static class Fmt
{
    public static string N(double value, string format = "0") => value.ToString(format, CultureInfo.InvariantCulture);

    public static double R(double value, int digits = 1) => double.IsFinite(value) ? Math.Round(value, digits) : 0;
}
