using Dapper;
using MatrixEmulator;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Matrix;

/// <summary>The chat service with its bridge on, wired to a homeserver emulator that pushes to it.</summary>
public sealed class BridgeHost : IAsyncDisposable
{
    private BridgeHost(HomeserverEmulator homeserver, ChatServer server)
    {
        Homeserver = homeserver;
        Server = server;
    }

    public HomeserverEmulator Homeserver { get; }

    public ChatServer Server { get; private set; }

    public AppserviceRegistration Registration => Homeserver.Options.Appservice!;

    public static Task<BridgeHost> StartAsync(string mode = "Appservice", Dictionary<string, string?>? settings = null, EmulatorOptions? emulator = null) =>
        Ports.StartOnFreePortAsync(port => StartAsync(port, mode, settings, emulator));

    private static async Task<BridgeHost> StartAsync(int port, string mode, Dictionary<string, string?>? settings, EmulatorOptions? emulator)
    {
        var appserviceUrl = new Uri($"http://127.0.0.1:{port}");
        // In client mode the homeserver has no appservice registered (and so no exclusive namespaces).
        var registration = mode == "Appservice" ? AppserviceRegistration.NovaChat(appserviceUrl) : null;
        var homeserver = await HomeserverEmulator.StartAsync((emulator ?? new EmulatorOptions()) with
        {
            Appservice = registration,
            TimeScale = 0.01,
        });
        var config = new Dictionary<string, string?>
        {
            ["urls"] = appserviceUrl.ToString(),
            ["Matrix:Enabled"] = "true",
            ["Matrix:Mode"] = mode,
            ["Matrix:HomeserverUrl"] = homeserver.BaseUrl.ToString(),
            ["Matrix:ServerName"] = homeserver.ServerName,
            ["Matrix:AsToken"] = registration?.AsToken,
            ["Matrix:HsToken"] = registration?.HsToken,
            ["Matrix:PollInterval"] = "00:00:00.100",
            ["Matrix:MinRetryDelay"] = "00:00:00.050",
            ["Matrix:MaxRetryDelay"] = "00:00:01",
            ["Matrix:SyncTimeout"] = "00:00:01",
        };
        if (mode == "Client")
        {
            var service = homeserver.CreateUser("nova-service", "servicepass");
            config["Matrix:UserId"] = service.UserId;
            config["Matrix:Password"] = "servicepass";
        }
        foreach (var (key, value) in settings ?? [])
        {
            config[key] = value;
        }
        try
        {
            return new BridgeHost(homeserver, await ChatServer.StartAsync(config));
        }
        catch
        {
            await homeserver.DisposeAsync();
            throw;
        }
    }

    /// <summary>Stops the chat service abruptly (as a crash would) and starts it again on the same database.</summary>
    public async Task RestartAsync(Dictionary<string, string?>? changes = null)
    {
        var settings = new Dictionary<string, string?>(Server.Settings);
        foreach (var (key, value) in changes ?? [])
        {
            settings[key] = value;
        }
        await Server.StopAsync();
        Server = await ChatServer.StartAsync(settings, reuse: Server);
    }

    public string Ghost(Guid userId) => $"@nova_{userId:N}:{Homeserver.ServerName}";

    public string? RoomOf(Guid conversationId) => Homeserver.ResolveAlias($"#nova_{conversationId:N}:{Homeserver.ServerName}");

    /// <summary>A new two-member conversation whose room exists and whose set-up (creation, joins) is all sent.</summary>
    public async Task<(Guid Conversation, string RoomId, HttpClient Owner)> BridgedConversationAsync(string name)
    {
        var client = Server.Client(Guid.NewGuid());
        var conversation = await client.CreateGroupAsync(name, Guid.NewGuid());
        var roomId = await Eventually.Async(() => RoomOf(conversation), "the room");
        // Room creation also joins the members; let all of it finish before a test injects its fault.
        await Eventually.Async(async () => await PendingActionsAsync() == 0, "the room set-up");
        return (conversation, roomId, client);
    }

    public async Task<int> PendingActionsAsync()
    {
        await using var connection = await Server.Services.GetRequiredService<ChatDatabase>().OpenAsync();
        return await connection.ExecuteScalarAsync<int>("SELECT COUNT(*) FROM matrix_outbox WHERE status = 'pending'");
    }

    /// <summary>The bodies of the room's messages (without reply fallbacks), in timeline order.</summary>
    public List<string> MessageBodies(string roomId) =>
        Homeserver.Timeline(roomId).Where(e => e.Type == "m.room.message").Select(e => WithoutReplyFallback((string?)e.OriginalContent["body"])).ToList();

    /// <summary>A body without the quoted lines a reply starts with (what Matrix clients show).</summary>
    public static string WithoutReplyFallback(string? body)
    {
        var lines = (body ?? "").Split('\n');
        var quoted = lines.TakeWhile(l => l.StartsWith('>')).Count();
        return quoted == 0 ? body ?? "" : string.Join('\n', lines.Skip(quoted).SkipWhile((l, i) => i == 0 && l.Length == 0));
    }

    /// <summary>Waits until the API reports the message's Matrix delivery state, and returns the message.</summary>
    public static async Task<System.Text.Json.JsonElement> MatrixStateAsync(HttpClient client, Guid conversationId, Guid messageId, string state)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            var message = await client.GetJsonAsync($"/api/v1/conversations/{conversationId}/messages/{messageId}");
            if (message.GetProperty("matrix") is { ValueKind: System.Text.Json.JsonValueKind.Object } matrix && matrix.GetProperty("state").GetString() == state)
            {
                return message;
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Message {messageId} never reached Matrix state {state}: {message}");
            }
            await Task.Delay(25);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        await Homeserver.DisposeAsync();
    }
}
