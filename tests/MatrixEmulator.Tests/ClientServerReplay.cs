using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Xunit;

namespace MatrixEmulator.Tests;

/// <summary>
/// Drives a recorded client-server exchange against the emulator in recorded order and asserts each answer: status,
/// errcode and error text, and the response's JSON shape and stable values, with recorded ids mapped to the emulator's.
/// </summary>
internal sealed class ClientServerReplay(HomeserverEmulator emulator, IdMap ids)
{
    private readonly Dictionary<string, string> _tokens = [];
    private byte[]? _uploaded;

    public IdMap Ids { get; } = ids;

    /// <summary>For recordings without a login step: the token to use for "user" steps of <paramref name="who"/> ("human" or "service").</summary>
    public void UseToken(string who, string accessToken) => _tokens[who] = accessToken;

    public async Task RunAsync(IEnumerable<JsonObject> steps, Func<string, Task>? beforeStep = null)
    {
        using var http = new HttpClient { BaseAddress = emulator.BaseUrl };
        foreach (var step in steps)
        {
            var name = (string)step["step"]!;
            if (beforeStep is not null)
            {
                await beforeStep(name);
            }

            using var request = BuildRequest(step, name);
            using var response = await http.SendAsync(request);
            var bytes = await response.Content.ReadAsByteArrayAsync();
            Assert.True((int)step["status"]! == (int)response.StatusCode,
                $"{name}: recorded {step["status"]}, emulator {(int)response.StatusCode} {Encoding.UTF8.GetString(bytes)} {string.Join("\n", emulator.ServerErrors)}");

            if (step.ContainsKey("retry_after_header"))
            {
                var header = response.Headers.RetryAfter?.ToString();
                Assert.True((string?)step["retry_after_header"] == header, $"{name}: Retry-After recorded {step["retry_after_header"]}, emulator {header}");
            }

            var recorded = step["response"] as JsonObject;
            if (recorded?["_non_json_bytes"] is JsonValue size)
            {
                Assert.Equal((int)size, bytes.Length);
                Assert.Equal(_uploaded, bytes);
                continue;
            }

            var actual = JsonNode.Parse(bytes);
            if (recorded?["next_batch"] is JsonValue recordedBatch)
            {
                Ids.Learn((string)recordedBatch!, (string)actual!["next_batch"]!);
            }

            // Some recorded bodies hold what the emulator does not model (push rules, presence): the status is the point.
            if (step["compare"] is JsonValue compare && !(bool)compare)
            {
                continue;
            }

            Ids.AssertMatches(recorded, actual, name);
            if (name.StartsWith("login_", StringComparison.Ordinal))
            {
                _tokens[name == "login_human" ? "human" : "service"] = (string)actual!["access_token"]!;
            }
        }
    }

    private HttpRequestMessage BuildRequest(JsonObject step, string name)
    {
        var request = new HttpRequestMessage(new HttpMethod((string)step["method"]!), Ids.Substitute((string)step["path"]!).TrimStart('/'));
        if (TokenFor(name, (string?)step["auth"]) is { } token)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        var body = step["request"] as JsonObject;
        if (body?["_raw_bytes"] is JsonValue size || name.Contains("upload", StringComparison.Ordinal))
        {
            // Recordings keep only the size of uploads; any bytes of that size will do.
            _uploaded = new byte[body?["_raw_bytes"] is JsonValue s ? (int)s : 16];
            Random.Shared.NextBytes(_uploaded);
            request.Content = new ByteArrayContent(_uploaded);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue((string?)body?["_content_type"] ?? "application/octet-stream");
        }
        else if (body is not null)
        {
            request.Content = new StringContent(Ids.Substitute(body)!.ToJsonString(), Encoding.UTF8, "application/json");
        }
        else if (step["raw_request"] is JsonValue raw)
        {
            // Sent byte for byte, for JSON that System.Text.Json would rewrite (1e3).
            request.Content = new StringContent(Ids.Substitute((string)raw!), Encoding.UTF8, "application/json");
        }

        return request;
    }

    // The recordings say only "user" for a user token. Steps named for the service account used its token; the
    // others, and the history reads of the ghosts' room (which the service account never joined, so Synapse would
    // have refused it), used the human's.
    private string? TokenFor(string step, string? auth) => auth switch
    {
        null => null,
        "as_token" => emulator.Options.Appservice!.AsToken,
        _ when step == "whoami_bad_token" => "syt_bm90X2FfdG9rZW4_notarealtokenatall_000000",
        _ when step is "svc_messages_backwards" || !(step.StartsWith("svc_", StringComparison.Ordinal) || step.Contains("service_account", StringComparison.Ordinal))
            => _tokens["human"],
        _ => _tokens["service"],
    };
}
