using System.Net.Http.Headers;
using System.Net.WebSockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RealtimeChat.Identity;
using RealtimeChat.Storage;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>The real service on a loopback port (real Kestrel, sockets and database), as clients meet it.</summary>
public sealed class ChatServer : IAsyncDisposable
{
    public const string SigningKey = "test-signing-key-0123456789-abcdefghijklmnopqrstuvwxyz";

    private readonly WebApplication _app;
    private readonly Func<Task> _dropDatabase;
    private readonly bool _ownsDataDirectory;

    private ChatServer(WebApplication app, Uri baseAddress, string dataDirectory, Func<Task> dropDatabase, bool ownsDataDirectory)
    {
        _app = app;
        BaseAddress = baseAddress;
        DataDirectory = dataDirectory;
        _dropDatabase = dropDatabase;
        _ownsDataDirectory = ownsDataDirectory;
    }

    public Uri BaseAddress { get; }

    public string DataDirectory { get; }

    public IServiceProvider Services => _app.Services;

    public Dictionary<string, string?> Settings { get; private set; } = [];

    /// <param name="settings">Configuration on top of the test defaults (keys as in appsettings, e.g. "Messages:SendBurst").</param>
    /// <param name="reuse">Start on the same data directory and database as an earlier (stopped) server.</param>
    public static async Task<ChatServer> StartAsync(Dictionary<string, string?>? settings = null, ChatServer? reuse = null)
    {
        var dataDirectory = reuse?.DataDirectory ?? Directory.CreateTempSubdirectory("chat-test-").FullName;
        Dictionary<string, string?> databaseSettings;
        Func<Task> drop;
        if (reuse is null)
        {
            (databaseSettings, drop) = await TestDatabase.CreateAsync(dataDirectory);
        }
        else
        {
            databaseSettings = reuse.Settings.Where(s => s.Key.StartsWith("Database:", StringComparison.Ordinal)).ToDictionary();
            drop = reuse._dropDatabase;
        }

        var config = new Dictionary<string, string?>
        {
            ["Storage:DataDirectory"] = dataDirectory,
            ["Auth:SigningKey"] = SigningKey,
            ["Messages:SendsPerSecond"] = "10000",
            ["Messages:SendBurst"] = "10000",
        };
        // Tests make many writes quickly; the rate limit tests set their own small budgets.
        foreach (var limitClass in new[] { "Edits", "Conversations", "Uploads", "ReadMarkers", "Reads" })
        {
            config[$"RateLimits:{limitClass}:PerSecond"] = "10000";
            config[$"RateLimits:{limitClass}:Burst"] = "10000";
        }
        foreach (var (key, value) in databaseSettings.Concat(settings ?? []))
        {
            config[key] = value;
        }

        // A fixed "urls" setting lets a test tell a homeserver emulator where this server will listen before it starts.
        var app = ChatApp.Build(["--urls", config.GetValueOrDefault("urls") ?? "http://127.0.0.1:0"], builder =>
        {
            builder.Configuration.AddInMemoryCollection(config);
            // CHAT_TEST_LOGS=1 shows the server's warnings and errors while debugging a test.
            builder.Logging.ClearProviders();
            if (Environment.GetEnvironmentVariable("CHAT_TEST_LOGS") == "1")
            {
                builder.Logging.AddConsole().AddFilter(level => level >= LogLevel.Warning);
            }
        });
        try
        {
            await ChatApp.InitializeAsync(app);
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            if (reuse is null)
            {
                await drop();
            }
            throw;
        }
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new ChatServer(app, new Uri(address), dataDirectory, drop, ownsDataDirectory: reuse is null) { Settings = config };
    }

    /// <summary>The settings a command needs to act on this server's data (database, data directory).</summary>
    public IEnumerable<string> CommandLineSettings() =>
        Settings.Where(s => s.Key.StartsWith("Database:", StringComparison.Ordinal) || s.Key == "Storage:DataDirectory" || s.Key == "Auth:SigningKey")
            .Select(s => $"--{s.Key}={s.Value}");

    public string TokenFor(Guid userId, TimeSpan? lifetime = null, string? name = null) =>
        DevelopmentTokens.Mint(
            System.Text.Encoding.UTF8.GetBytes(SigningKey), userId, lifetime ?? TimeSpan.FromHours(1),
            Services.GetRequiredService<IOptions<AuthOptions>>().Value, name);

    /// <param name="name">The token's display name claim, if any.</param>
    public HttpClient Client(Guid? userId = null, string? name = null)
    {
        var client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        if (userId is { } id)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", TokenFor(id, name: name));
        }
        return client;
    }

    public async Task<LiveSocket> ConnectAsync(Guid userId)
    {
        var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("Authorization", $"Bearer {TokenFor(userId)}");
        await socket.ConnectAsync(new Uri($"ws://{BaseAddress.Authority}/ws"), CancellationToken.None);
        var live = new LiveSocket(socket);
        await live.WaitForAsync(f => f.Type == "ready");
        return live;
    }

    /// <summary>Stops the server but keeps its data, so a new server can start on it.</summary>
    public async Task StopAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        catch (ObjectDisposedException)
        {
            // Already stopped by StopAsync.
        }
        if (_ownsDataDirectory)
        {
            await _dropDatabase();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try
            {
                Directory.Delete(DataDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
