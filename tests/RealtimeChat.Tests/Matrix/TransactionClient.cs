using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace RealtimeChat.Tests.Matrix;

/// <summary>Talks to the service's appservice endpoints as the homeserver would.</summary>
public sealed class TransactionClient(BridgeHost bridge) : IAsyncDisposable
{
    public HttpClient Raw { get; } = bridge.Server.Client();

    public async Task<HttpResponseMessage> PutAsync(string txnId, JsonObject body, bool bearer = false)
    {
        if (!bearer)
        {
            return await Raw.PutAsJsonAsync($"/transactions/{txnId}?access_token={bridge.Registration.HsToken}", body);
        }
        using var request = new HttpRequestMessage(HttpMethod.Put, $"/_matrix/app/v1/transactions/{txnId}") { Content = JsonContent.Create(body) };
        request.Headers.Authorization = new("Bearer", bridge.Registration.HsToken);
        return await Raw.SendAsync(request);
    }

    /// <summary>A text message as the homeserver pushes it.</summary>
    public static JsonObject Text(string eventId, string roomId, string sender, string body, JsonObject? extra = null)
    {
        var content = new JsonObject { ["msgtype"] = "m.text", ["body"] = body };
        foreach (var (key, value) in extra ?? [])
        {
            content[key] = value?.DeepClone();
        }
        return new JsonObject
        {
            ["type"] = "m.room.message", ["room_id"] = roomId, ["sender"] = sender, ["event_id"] = eventId,
            ["origin_server_ts"] = 1, ["content"] = content,
        };
    }

    public static JsonObject Transaction(params JsonObject[] events) => new() { ["events"] = new JsonArray([.. events]) };

    public ValueTask DisposeAsync()
    {
        Raw.Dispose();
        return ValueTask.CompletedTask;
    }
}
