using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace RealtimeChat.Tests.Infrastructure;

public static class Api
{
    /// <summary>The value of one series on <c>/metrics</c> (e.g. <c>name{label="x"}</c>), 0 while it has none.</summary>
    public static async Task<double> MetricAsync(this HttpClient client, string series)
    {
        var line = (await client.GetStringAsync("/metrics")).Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        return line is null ? 0 : double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    public static Task<HttpResponseMessage> PostJsonAsync(this HttpClient client, string url, object body) =>
        client.PostAsJsonAsync(url, body, ChatJson.Options);

    public static Task<HttpResponseMessage> PatchJsonAsync(this HttpClient client, string url, object body) =>
        client.PatchAsJsonAsync(url, body, ChatJson.Options);

    public static Task<HttpResponseMessage> PutJsonAsync(this HttpClient client, string url, object body) =>
        client.PutAsJsonAsync(url, body, ChatJson.Options);

    public static async Task<JsonElement> JsonAsync(this HttpResponseMessage response, HttpStatusCode expected)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"Expected {(int)expected} but got {(int)response.StatusCode}: {text}");
        return text.Length == 0 ? default : JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Asserts a problem+json answer with the given status and stable code.</summary>
    public static async Task<JsonElement> ProblemAsync(this HttpResponseMessage response, HttpStatusCode expected, string? code = null)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"Expected {(int)expected} but got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(text).RootElement.Clone();
        Assert.Equal((int)expected, problem.GetProperty("status").GetInt32());
        if (code is not null)
        {
            Assert.Equal(code, problem.GetProperty("code").GetString());
        }
        return problem;
    }

    public static async Task<Guid> CreateGroupAsync(this HttpClient client, string name, params Guid[] members)
    {
        var response = await client.PostJsonAsync("/api/v1/conversations", new { kind = "group", name, member_ids = members });
        return (await response.JsonAsync(HttpStatusCode.Created)).GetProperty("id").GetGuid();
    }

    public static async Task<JsonElement> SendAsync(this HttpClient client, Guid conversationId, string content, string? clientMessageId = null)
    {
        var response = await client.PostJsonAsync($"/api/v1/conversations/{conversationId}/messages", new { content, client_message_id = clientMessageId });
        return await response.JsonAsync(HttpStatusCode.Created);
    }

    public static async Task<JsonElement> GetJsonAsync(this HttpClient client, string url)
    {
        var response = await client.GetAsync(url);
        return await response.JsonAsync(HttpStatusCode.OK);
    }
}
