using Microsoft.Playwright;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.WebClient;

/// <summary>
/// The browser tests run on their own, after the parallel part of the suite: Chromium takes a good part of the two
/// cores, and both the Matrix bridge's timing assertions and these tests' own waits are sensitive to that.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class BrowserCollection
{
    public const string Name = "Browser";
}

/// <summary>
/// Headless Chromium from the system's package, driven by Playwright (whose own browser download cannot work here).
/// <c>scripts/test.sh</c> installs it; <c>CHAT_TEST_CHROMIUM</c> points elsewhere.
/// </summary>
public sealed class Browser : IAsyncLifetime
{
    public static string ExecutablePath => Environment.GetEnvironmentVariable("CHAT_TEST_CHROMIUM") ?? "/usr/bin/chromium";

    private IPlaywright? _playwright;

    public IBrowser Chromium { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (!File.Exists(ExecutablePath))
        {
            throw new InvalidOperationException(
                $"No Chromium at {ExecutablePath}: run scripts/test.sh (it installs Debian's chromium) or set CHAT_TEST_CHROMIUM.");
        }
        _playwright = await Playwright.CreateAsync();
        Chromium = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ExecutablePath,
            Args =
            [
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                // A generated tone stands in for the microphone, and nobody is there to click "allow".
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                // The other side plays the voice message without a click.
                "--autoplay-policy=no-user-gesture-required",
            ],
        });
    }

    public async Task DisposeAsync()
    {
        if (Chromium is not null)
        {
            await Chromium.CloseAsync();
        }
        _playwright?.Dispose();
    }

    /// <summary>Where screenshots go: <c>tests/artifacts/web-client/&lt;database&gt;/</c> in the repository.</summary>
    public static string ArtifactsDirectory
    {
        get
        {
            var directory = new DirectoryInfo(AppContext.BaseDirectory);
            while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "realtime-chat-service.slnx")))
            {
                directory = directory.Parent;
            }
            var root = directory?.FullName ?? Path.GetTempPath();
            var path = Path.Combine(root, "tests", "artifacts", "web-client", TestDatabase.IsPostgres ? "postgres" : "sqlite");
            Directory.CreateDirectory(path);
            return path;
        }
    }
}
