using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace MatrixEmulator.Tests;

/// <summary>Appservice pushes as one line per event, so a recording and a live run compare as text; and waiting for them.</summary>
internal static class PushTranscripts
{
    /// <summary>The events of a golden recording's push: [type, sender, body].</summary>
    public static string Describe(JsonArray recordedEvents) =>
        string.Join(" | ", recordedEvents.Select(e => $"{e![0]} {e[1]} {e[2]?.ToString() ?? "-"}"));

    /// <summary>The events of a push the emulator made.</summary>
    public static string Describe(JsonObject? body) =>
        string.Join(" | ", ((JsonArray)body!["events"]!).Select(e => $"{e!["type"]} {e["sender"]} {e["content"]?["body"]?.ToString() ?? "-"}"));

    public static List<string> Bodies(JsonObject? body) =>
        (body?["events"] as JsonArray ?? []).Select(e => e?["content"]?["body"]?.ToString()).OfType<string>().ToList();

    /// <summary>Registers a ghost in the appservice's namespace, as the bridge does, and acts as it.</summary>
    public static async Task<MatrixUser> RegisterGhostAsync(HomeserverEmulator emulator, string localpart)
    {
        using var http = new HttpClient { BaseAddress = emulator.BaseUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", emulator.Options.Appservice!.AsToken);
        var response = await http.PostAsJsonAsync("_matrix/client/v3/register", new { type = "m.login.application_service", username = localpart });
        response.EnsureSuccessStatusCode();
        return emulator.LoginAs($"@{localpart}:{emulator.ServerName}");
    }

    public static async Task UntilAsync(Func<bool> condition, TimeSpan patience)
    {
        var deadline = DateTimeOffset.UtcNow + patience;
        while (!condition())
        {
            Assert.True(DateTimeOffset.UtcNow < deadline, "condition not reached in time");
            await Task.Delay(5);
        }
    }
}
