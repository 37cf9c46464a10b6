using System.Diagnostics;
using System.Text;

namespace RealtimeChat.Tests.Synapse;

/// <summary>
/// A private, real Synapse 1.67.0 run by <c>synapse.sh</c> (from <c>../shared/synapse</c>) in a temporary directory:
/// its own config, SQLite store, media and log. Restartable, killable and stoppable, as the real failure model needs.
/// </summary>
public sealed class SynapseHomeserver : IAsyncDisposable
{
    private static readonly HashSet<string> Live = [];

    static SynapseHomeserver() =>
        // A test run that ends without disposing (a crash, Ctrl+C) must not leave homeservers behind.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            lock (Live)
            {
                foreach (var directory in Live)
                {
                    try
                    {
                        if (int.TryParse(File.ReadAllText(Path.Combine(directory, "synapse.pid")).Trim(), out var pid))
                        {
                            Process.GetProcessById(pid).Kill();
                        }
                    }
                    catch (Exception ex) when (ex is IOException or ArgumentException or InvalidOperationException)
                    {
                        // gone already
                    }
                }
            }
        };

    private SynapseHomeserver(string script, string directory, Uri baseUrl, string serverName)
    {
        Script = script;
        Directory = directory;
        BaseUrl = baseUrl;
        ServerName = serverName;
        lock (Live)
        {
            Live.Add(directory);
        }
    }

    public string Script { get; }

    /// <summary>The instance directory (homeserver.yaml, homeserver.db, homeserver.log, stdout.log).</summary>
    public string Directory { get; }

    public Uri BaseUrl { get; }

    public string ServerName { get; }

    public bool Running { get; private set; } = true;

    /// <summary>
    /// Where synapse.sh is: <c>CHAT_TEST_SYNAPSE_SH</c>, else <c>../shared/synapse/synapse.sh</c> beside the repository
    /// root, else <c>/work/shared/synapse/synapse.sh</c>. Null when none exists.
    /// </summary>
    public static string? Locate()
    {
        if (Environment.GetEnvironmentVariable("CHAT_TEST_SYNAPSE_SH") is { Length: > 0 } configured)
        {
            return File.Exists(configured) ? Path.GetFullPath(configured) : null;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "realtime-chat-service.slnx")))
            {
                var beside = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "synapse", "synapse.sh"));
                if (File.Exists(beside))
                {
                    return beside;
                }
                break;
            }
        }
        const string workplace = "/work/shared/synapse/synapse.sh";
        return File.Exists(workplace) ? workplace : null;
    }

    /// <summary><c>CHAT_TEST_SYNAPSE=required</c>: a missing Synapse fails the suite instead of skipping it.</summary>
    public static bool Required =>
        string.Equals(Environment.GetEnvironmentVariable("CHAT_TEST_SYNAPSE"), "required", StringComparison.OrdinalIgnoreCase);

    public static string RequireScript() =>
        Locate() ?? throw new InvalidOperationException(
            "CHAT_TEST_SYNAPSE=required but no synapse.sh was found (CHAT_TEST_SYNAPSE_SH, ../shared/synapse/synapse.sh, /work/shared/synapse/synapse.sh).");

    /// <param name="registrationYaml">An appservice registration to load, or null for none (client mode).</param>
    public static async Task<SynapseHomeserver> StartAsync(string? registrationYaml)
    {
        var script = RequireScript();
        var directory = System.IO.Directory.CreateTempSubdirectory("chat-synapse-").FullName;
        var args = new List<string> { "start", directory };
        if (registrationYaml is not null)
        {
            var path = Path.Combine(directory, "nova-chat.yaml");
            await File.WriteAllTextAsync(path, registrationYaml);
            args.Add(path);
        }
        string output;
        try
        {
            // synapse.sh would pick a free port itself and release it for Synapse's few seconds of start-up.
            output = await RunAsync(script, args, TimeSpan.FromSeconds(120), port: Infrastructure.Ports.Free());
        }
        catch
        {
            await RunAsync(script, ["kill", directory], TimeSpan.FromSeconds(30), check: false);
            throw;
        }
        var values = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split('=', 2)).Where(parts => parts.Length == 2).ToDictionary(parts => parts[0], parts => parts[1].Trim());
        return new SynapseHomeserver(script, directory, new Uri(values["HS_URL"]), values["HS_SERVER_NAME"]);
    }

    /// <summary>Stops gracefully and starts again on the same store: what a deploy does.</summary>
    public async Task RestartAsync()
    {
        await StopAsync();
        await StartAgainAsync();
    }

    /// <summary>kill -9: requests in flight get no answer.</summary>
    public async Task KillAsync()
    {
        Running = false;
        await RunAsync(Script, ["kill", Directory], TimeSpan.FromSeconds(60));
    }

    public async Task StopAsync()
    {
        Running = false;
        await RunAsync(Script, ["stop", Directory], TimeSpan.FromSeconds(60));
    }

    /// <summary>Starts a stopped or killed instance again (same store, same port, same registrations).</summary>
    public async Task StartAgainAsync()
    {
        await RunAsync(Script, ["start", Directory], TimeSpan.FromSeconds(120));
        Running = true;
    }

    /// <summary>The lines of its log about pushing to appservices (failures, recoverers, retries).</summary>
    public List<string> AppservicePushLog() =>
        [.. File.ReadLines(Path.Combine(Directory, "homeserver.log")).Where(l => l.Contains("synapse.appservice", StringComparison.Ordinal))];

    /// <summary>How many appservice recoverers have finished (each one started after a push failed).</summary>
    public int AppserviceRecoveries() => AppservicePushLog().Count(l => l.Contains("Successfully recovered", StringComparison.Ordinal));

    /// <summary>SIGSTOP: Synapse hangs (as in a long pause); requests reach its sockets but get no answer.</summary>
    public Task FreezeAsync() => SignalAsync("-STOP");

    /// <summary>SIGCONT: Synapse handles what it was sent meanwhile, answering clients that may have given up.</summary>
    public Task ThawAsync() => SignalAsync("-CONT");

    private async Task SignalAsync(string signal)
    {
        var pid = (await File.ReadAllTextAsync(Path.Combine(Directory, "synapse.pid"))).Trim();
        using var process = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { signal, pid }, UseShellExecute = false })!;
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill {signal} {pid} failed ({process.ExitCode}).");
        }
    }

    /// <summary>Registers a local user with the shared secret (<c>synapse.sh user</c>).</summary>
    public async Task RegisterUserAsync(string localpart, string password, bool admin = false)
    {
        List<string> args = ["user", Directory, localpart, password];
        if (admin)
        {
            args.Add("--admin");
        }
        await RunAsync(Script, args, TimeSpan.FromSeconds(60));
    }

    /// <summary>A new local user, logged in: a human acting through the Client-Server API.</summary>
    public async Task<MatrixHttpClient> CreateUserAsync(string localpart, string password = "humanpass")
    {
        await RegisterUserAsync(localpart, password);
        return await MatrixHttpClient.LoginAsync(BaseUrl, localpart, password);
    }

    /// <summary>The tail of Synapse's log, for failure messages.</summary>
    public string LogTail(int lines = 40)
    {
        var path = Path.Combine(Directory, "homeserver.log");
        return File.Exists(path) ? string.Join('\n', File.ReadLines(path).TakeLast(lines)) : "(no homeserver.log)";
    }

    /// <param name="port">Synapse's port, when <c>start</c> configures a new instance (<c>SYNAPSE_PORT</c>).</param>
    internal static async Task<string> RunAsync(string script, IEnumerable<string> args, TimeSpan timeout, bool check = true, int? port = null)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (port is { } chosen)
        {
            info.Environment["SYNAPSE_PORT"] = chosen.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        info.ArgumentList.Add(script);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"synapse.sh {string.Join(' ', info.ArgumentList.Skip(1))} did not finish within {timeout}.");
        }
        var output = await stdout;
        if (check && process.ExitCode != 0)
        {
            throw new InvalidOperationException(
                new StringBuilder($"synapse.sh {string.Join(' ', info.ArgumentList.Skip(1))} failed ({process.ExitCode}):\n")
                    .Append(output).Append(await stderr).ToString());
        }
        return output;
    }

    public async ValueTask DisposeAsync()
    {
        await RunAsync(Script, ["kill", Directory], TimeSpan.FromSeconds(60), check: false);
        lock (Live)
        {
            Live.Remove(Directory);
        }
        if (Environment.GetEnvironmentVariable("CHAT_TEST_KEEP_SYNAPSE") == "1")
        {
            Console.Error.WriteLine($"Synapse directory kept: {Directory}");
            return;
        }
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
