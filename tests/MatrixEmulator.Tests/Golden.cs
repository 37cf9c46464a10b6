using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit;

namespace MatrixEmulator.Tests;

/// <summary>Loads the Synapse 1.67 recordings and compares emulator output with them.</summary>
internal static class Golden
{
    public static List<JsonObject> Load(string file) =>
        File.ReadLines(Path.Combine(AppContext.BaseDirectory, "golden", file))
            .Where(line => !string.IsNullOrWhiteSpace(line))
            .Select(line => (JsonObject)JsonNode.Parse(line)!)
            .ToList();
}

/// <summary>
/// Maps ids from the recording (room ids, event ids, media ids) to the ones the emulator produced, learning each pair
/// the first time the same position of a recorded and an actual response holds one.
/// </summary>
internal sealed partial class IdMap
{
    // Values that differ per run by nature; only their presence and JSON kind are compared.
    private static readonly HashSet<string> Volatile =
        ["access_token", "device_id", "age", "origin_server_ts", "next_batch", "prev_batch", "start", "end", "retry_after_ms"];

    private readonly Dictionary<string, string> _map = [];

    public string Substitute(string text)
    {
        foreach (var (recorded, actual) in _map.OrderByDescending(p => p.Key.Length))
        {
            text = text.Replace(Uri.EscapeDataString(recorded), Uri.EscapeDataString(actual)).Replace(recorded, actual);
        }

        return text;
    }

    public JsonNode? Substitute(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.Select(p => KeyValuePair.Create(p.Key, Substitute(p.Value)))),
        JsonArray a => new JsonArray(a.Select(Substitute).ToArray()),
        JsonValue v when v.TryGetValue<string>(out var s) => JsonValue.Create(Substitute(s)),
        _ => node?.DeepClone(),
    };

    public void Learn(string recorded, string actual)
    {
        if (_map.TryGetValue(recorded, out var known))
        {
            Assert.True(known == actual, $"recorded id {recorded} maps to {known} but the emulator now answered {actual}");
            return;
        }

        _map[recorded] = actual;
        if (recorded.StartsWith("mxc://", StringComparison.Ordinal) && actual.StartsWith("mxc://", StringComparison.Ordinal))
        {
            _map[recorded[(recorded.LastIndexOf('/') + 1)..]] = actual[(actual.LastIndexOf('/') + 1)..];
        }
    }

    /// <summary>Learns ids at matching positions, then asserts the same keys, array lengths and non-volatile values.</summary>
    public void AssertMatches(JsonNode? recorded, JsonNode? actual, string context)
    {
        LearnIds(recorded, actual);
        Compare(recorded, actual, context, key: null);
    }

    private void LearnIds(JsonNode? recorded, JsonNode? actual)
    {
        switch (recorded)
        {
            case JsonObject ro when actual is JsonObject ao:
                foreach (var (key, value) in ro)
                {
                    LearnIds(value, ao[Substitute(key)]);
                }

                break;
            case JsonArray ra when actual is JsonArray aa && ra.Count == aa.Count:
                for (var i = 0; i < ra.Count; i++)
                {
                    LearnIds(ra[i], aa[i]);
                }

                break;
            case JsonValue rv when rv.TryGetValue<string>(out var r) && actual is JsonValue av && av.TryGetValue<string>(out var a)
                && IdPattern().IsMatch(r) && !_map.ContainsKey(r):
                Learn(r, a);
                break;
        }
    }

    private void Compare(JsonNode? recorded, JsonNode? actual, string path, string? key)
    {
        switch (recorded)
        {
            case JsonObject ro:
                var ao = Assert.IsType<JsonObject>(actual, exactMatch: false);
                // Keys can be ids too (rooms.join.{roomId}).
                var expectedKeys = ro.Select(p => Substitute(p.Key)).Order().ToList();
                var actualKeys = ao.Select(p => p.Key).Order().ToList();
                Assert.True(
                    expectedKeys.SequenceEqual(actualKeys),
                    $"{path}: keys differ. recorded [{string.Join(", ", expectedKeys)}] emulator [{string.Join(", ", actualKeys)}]");
                foreach (var (k, value) in ro)
                {
                    Compare(value, ao[Substitute(k)], $"{path}.{k}", k);
                }

                break;
            case JsonArray ra:
                var aa = Assert.IsType<JsonArray>(actual, exactMatch: false);
                Assert.True(ra.Count == aa.Count, $"{path}: recorded {ra.Count} items, emulator {aa.Count}: {aa.ToJsonString()}");
                var (rs, @as) = key is "invite_room_state" ? (SortByType(ra), SortByType(aa)) : (ra.ToList(), aa.ToList());
                for (var i = 0; i < rs.Count; i++)
                {
                    Compare(rs[i], @as[i], $"{path}[{i}]", null);
                }

                break;
            case null:
                Assert.True(actual is null, $"{path}: recorded null, emulator {actual?.ToJsonString()}");
                break;
            default:
                Assert.True(actual is JsonValue, $"{path}: recorded {recorded.ToJsonString()}, emulator {actual?.ToJsonString() ?? "nothing"}");
                Assert.Equal(recorded.GetValueKind(), actual!.GetValueKind());
                if (key is null || !Volatile.Contains(key))
                {
                    var expected = Substitute(recorded)!.ToJsonString();
                    Assert.True(expected == actual.ToJsonString(), $"{path}: expected {expected}, emulator {actual.ToJsonString()}");
                }

                break;
        }
    }

    private static List<JsonNode?> SortByType(JsonArray array) =>
        array.OrderBy(n => (string?)n?["type"], StringComparer.Ordinal).ToList();

    [GeneratedRegex(@"^(\$[A-Za-z0-9_\-]{43}|![A-Za-z]+:localhost|mxc://localhost/[A-Za-z]+)$")]
    private static partial Regex IdPattern();
}
