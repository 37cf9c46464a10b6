using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Synapse;

/// <summary>
/// The chat service with its bridge on, wired to a private real Synapse: in appservice mode Synapse loads the
/// registration printed by the service's own <c>registration</c> command, whose url is the service's fixed loopback
/// port; in client mode Synapse has no appservice and the service logs in as <c>@nova-service</c>.
/// </summary>
public sealed class SynapseBridge : IAsyncDisposable
{
    public const string ServicePassword = "servicepass";

    private SynapseBridge(string mode, SynapseHomeserver homeserver, ChatServer server, MatrixHttpClient bot, string? asToken)
    {
        Mode = mode;
        Homeserver = homeserver;
        Server = server;
        Bot = bot;
        AsToken = asToken;
    }

    public string Mode { get; }

    public SynapseHomeserver Homeserver { get; }

    public ChatServer Server { get; private set; }

    /// <summary>The account that created the rooms: the bridge bot (as_token) or the client-mode service account.</summary>
    public MatrixHttpClient Bot { get; }

    public string? AsToken { get; }

    public string ServerName => Homeserver.ServerName;

    /// <param name="settings">Service configuration on top of the defaults (e.g. <c>Matrix:Enabled=false</c> for late enable).</param>
    public static Task<SynapseBridge> StartAsync(string mode = "Appservice", Dictionary<string, string?>? settings = null) =>
        Ports.StartOnFreePortAsync(port => StartAsync(port, mode, settings));

    private static async Task<SynapseBridge> StartAsync(int port, string mode, Dictionary<string, string?>? settings)
    {
        var appserviceUrl = new Uri($"http://127.0.0.1:{port}");
        string? asToken = null, hsToken = null, registration = null;
        if (mode == "Appservice")
        {
            asToken = NewToken();
            hsToken = NewToken();
            registration = await RegistrationAsync(appserviceUrl, asToken, hsToken);
        }
        var homeserver = await SynapseHomeserver.StartAsync(registration);
        try
        {
            var config = new Dictionary<string, string?>
            {
                ["urls"] = appserviceUrl.ToString(),
                ["Matrix:Enabled"] = "true",
                ["Matrix:Mode"] = mode,
                ["Matrix:HomeserverUrl"] = homeserver.BaseUrl.ToString(),
                ["Matrix:ServerName"] = homeserver.ServerName,
                ["Matrix:AppserviceUrl"] = appserviceUrl.ToString(),
                ["Matrix:AsToken"] = asToken,
                ["Matrix:HsToken"] = hsToken,
                ["Matrix:PollInterval"] = "00:00:00.100",
                ["Matrix:MinRetryDelay"] = "00:00:00.100",
                ["Matrix:MaxRetryDelay"] = "00:00:01",
                ["Matrix:SyncTimeout"] = "00:00:05",
                ["Matrix:RequestTimeout"] = "00:00:15",
            };
            MatrixHttpClient bot;
            if (mode == "Client")
            {
                await homeserver.RegisterUserAsync("nova-service", ServicePassword);
                config["Matrix:UserId"] = $"@nova-service:{homeserver.ServerName}";
                config["Matrix:Password"] = ServicePassword;
                bot = await MatrixHttpClient.LoginAsync(homeserver.BaseUrl, "nova-service", ServicePassword);
            }
            else
            {
                bot = new MatrixHttpClient(homeserver.BaseUrl, asToken!, $"@nova-bridge:{homeserver.ServerName}");
            }
            foreach (var (key, value) in settings ?? [])
            {
                config[key] = value;
            }
            var server = await ChatServer.StartAsync(config);
            return new SynapseBridge(mode, homeserver, server, bot, asToken);
        }
        catch
        {
            await homeserver.DisposeAsync();
            throw;
        }
    }

    /// <summary>The registration YAML exactly as the service's <c>registration</c> command prints it.</summary>
    private static async Task<string> RegistrationAsync(Uri appserviceUrl, string asToken, string hsToken)
    {
        var dll = typeof(ChatApp).Assembly.Location;
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[]
                 {
                     dll, "registration", "--Matrix:Enabled=true", $"--Matrix:ServerName={ServerNameSetting}",
                     "--Matrix:HomeserverUrl=http://127.0.0.1:8008", $"--Matrix:AppserviceUrl={appserviceUrl}",
                     $"--Matrix:AsToken={asToken}", $"--Matrix:HsToken={hsToken}",
                 })
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(cts.Token);
        var yaml = await stdout;
        if (process.ExitCode != 0 || !yaml.Contains(asToken, StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"`registration` failed ({process.ExitCode}): {yaml}{await stderr}");
        }
        return yaml;
    }

    /// <summary>Stops the chat service abruptly and starts it again on the same database, same port.</summary>
    public Task RestartServiceAsync(Dictionary<string, string?>? changes = null) => WhileServiceStoppedAsync(() => Task.CompletedTask, changes);

    /// <summary>Stops the chat service abruptly, runs <paramref name="meanwhile"/>, and starts it again on the same database, same port.</summary>
    public async Task WhileServiceStoppedAsync(Func<Task> meanwhile, Dictionary<string, string?>? changes = null)
    {
        var settings = new Dictionary<string, string?>(Server.Settings);
        foreach (var (key, value) in changes ?? [])
        {
            settings[key] = value;
        }
        await Server.StopAsync();
        await meanwhile();
        Server = await ChatServer.StartAsync(settings, reuse: Server);
    }

    /// <summary>
    /// The service as its own process (what operators run, and what <c>kill -9</c> hits) on the in-process server's
    /// database, data directory and port; stop the in-process server first, and dispose the process before the bridge.
    /// </summary>
    public async Task<ServiceProcess> StartProcessAsync()
    {
        var process = ServiceProcess.Start(
            Server.Settings.Where(s => s.Value is not null).Select(s => $"--{s.Key}={s.Value}"), workingDirectory: Server.DataDirectory);
        await process.WaitListeningAsync();
        return process;
    }

    public string Ghost(Guid userId) => $"@nova_{userId:N}:{ServerName}";

    /// <summary>The account that sends app messages into Matrix in this mode.</summary>
    public string SenderOf(Guid userId) => Mode == "Client" ? $"@nova-service:{ServerName}" : Ghost(userId);

    /// <summary>The body a mirrored app text has on Matrix in this mode.</summary>
    public string BodyOf(Guid userId, string text) => Mode == "Client" ? $"@{userId:N}:{ServerName}: {text}" : text;

    public string Alias(Guid conversationId) => $"#nova_{conversationId:N}:{ServerName}";

    public async Task<string> RoomOfAsync(Guid conversationId, TimeSpan? timeout = null) =>
        await EventuallyAsync(() => Bot.ResolveAliasAsync(Alias(conversationId)), $"the room of conversation {conversationId}", timeout);

    /// <summary>Invites as the bridge's account. Synapse 1.67 makes the alias resolvable before the room's first events
    /// are stored, so right after <see cref="RoomOfAsync"/> an invite can get 403 "not in room" or even 500 ("no
    /// prev_events"): both mean "wait a moment".</summary>
    public async Task InviteAsync(string roomId, string userId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            try
            {
                await Bot.InviteAsync(roomId, userId);
                return;
            }
            catch (MatrixRequestException ex) when (DateTime.UtcNow < deadline &&
                ((ex.Status == HttpStatusCode.Forbidden && ex.Message.Contains("not in room", StringComparison.Ordinal)) || (int)ex.Status >= 500))
            {
                await Task.Delay(100);
            }
        }
    }

    /// <summary>A human Matrix user (registered with synapse.sh) invited by the bridge's account and joined to the room.</summary>
    public async Task<MatrixHttpClient> HumanInRoomAsync(string roomId, string? localpart = null)
    {
        var human = await Homeserver.CreateUserAsync(localpart ?? $"human{Guid.NewGuid():N}"[..16]);
        await InviteAsync(roomId, human.UserId);
        await human.JoinAsync(roomId);
        return human;
    }

    /// <summary>A new group conversation of <paramref name="owner"/> and <paramref name="others"/>, its room, and a human in it.</summary>
    public async Task<(Guid Conversation, string RoomId, MatrixHttpClient Human)> BridgedGroupAsync(Guid owner, string name, params Guid[] others)
    {
        var conversation = await Server.Client(owner).CreateGroupAsync(name, others);
        var roomId = await RoomOfAsync(conversation);
        var human = await HumanInRoomAsync(roomId);
        return (conversation, roomId, human);
    }

    /// <summary>The conversation's messages as an app member reads them (REST history), in order.</summary>
    public Task<List<JsonElement>> MessagesAsync(Guid member, Guid conversationId) => MessagesAsync(Server.Client(member), conversationId);

    /// <summary>The conversation's messages as the <paramref name="member"/>'s client reads them (REST history), in order.</summary>
    public static async Task<List<JsonElement>> MessagesAsync(HttpClient member, Guid conversationId)
    {
        var all = new List<JsonElement>();
        long after = 0;
        while (true)
        {
            var page = await member.GetJsonAsync($"/api/v1/conversations/{conversationId}/messages?after={after}&limit=100");
            var messages = page.GetProperty("messages").EnumerateArray().ToList();
            all.AddRange(messages);
            if (messages.Count == 0 || !page.GetProperty("has_more").GetBoolean())
            {
                return all;
            }
            after = messages.Max(m => m.GetProperty("seq").GetInt64());
        }
    }

    /// <summary>The contents of the conversation's messages as an app member reads them, in order.</summary>
    public async Task<List<string?>> HistoryAsync(Guid member, Guid conversationId) =>
        [.. (await MessagesAsync(member, conversationId)).Select(m => m.GetProperty("content").GetString())];

    /// <summary>Waits until the room's m.room.message bodies (as <paramref name="reader"/> sees them) satisfy the condition.</summary>
    public static async Task<List<MatrixEvent>> RoomMessagesAsync(
        MatrixHttpClient reader, string roomId, Func<List<MatrixEvent>, bool> until, string what, TimeSpan? timeout = null)
    {
        List<MatrixEvent> last = [];
        try
        {
            return await EventuallyAsync(async () =>
            {
                last = await reader.MessagesAsync(roomId);
                return until(last) ? last : null;
            }, what, timeout);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message} The room has {last.Count} messages: {string.Join(" | ", last.Select(e => e.Body).TakeLast(20))}");
        }
    }

    // Synapse answers slower than the emulator and is not polled every 25 ms.
    public static Task<T> EventuallyAsync<T>(Func<Task<T?>> probe, string what, TimeSpan? timeout = null) where T : class =>
        Eventually.Async(probe, what, timeout ?? TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(100));

    public static Task EventuallyAsync(Func<Task<bool>> condition, string what, TimeSpan? timeout = null) =>
        Eventually.Async(condition, what, timeout ?? TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(100));

    /// <summary>The server_name synapse.sh gives a new instance (its SYNAPSE_SERVER_NAME, default localhost).</summary>
    private static string ServerNameSetting => Environment.GetEnvironmentVariable("SYNAPSE_SERVER_NAME") is { Length: > 0 } name ? name : "localhost";

    private static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Server.DisposeAsync();
        }
        finally
        {
            Bot.Dispose();
            await Homeserver.DisposeAsync();
        }
    }
}
