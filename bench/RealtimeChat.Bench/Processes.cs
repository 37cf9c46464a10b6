using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace RealtimeChat.Bench;

/// <summary>A child process serving HTTP (the chat service, or this program's own baseline server).</summary>
public sealed partial class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly Queue<string> _tail = new();
    private readonly StreamWriter? _fullLog;

    private ServerProcess(Process process, string name)
    {
        _process = process;
        // CHAT_BENCH_SERVICE_LOG=<directory> keeps every line each child printed, in <name>-<pid>.log.
        if (Environment.GetEnvironmentVariable("CHAT_BENCH_SERVICE_LOG") is { Length: > 0 } directory)
        {
            Directory.CreateDirectory(directory);
            _fullLog = new StreamWriter(Path.Combine(directory, $"{name}-{process.Id}.log")) { AutoFlush = true };
        }
    }

    public Uri BaseUrl { get; private set; } = null!;

    public int Pid => _process.Id;

    /// <summary>
    /// Starts <paramref name="dll"/> and waits until it prints the address it listens on, then until that address answers
    /// <paramref name="readyPath"/>. The address comes from the child's own output, never from a port chosen here
    /// beforehand: a port found free and released can be taken by another process (a test host on port 0) before the child
    /// binds it, and a readiness probe would then be answered by that other server.
    /// </summary>
    public static async Task<ServerProcess> StartAsync(string name, string dll, IEnumerable<string> arguments, string readyPath, TextWriter log)
    {
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"{dll} does not exist: build it first (scripts/bench.sh builds Release).", dll);
        }
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(dll);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {dll}.");
        Children.Track(process);
        var server = new ServerProcess(process, name);
        var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            server.Keep(e.Data);
            if (e.Data is not null && ListeningAddress().Match(e.Data) is { Success: true } match)
            {
                listening.TrySetResult(new Uri(match.Groups[1].Value));
            }
        };
        process.ErrorDataReceived += (_, e) => server.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        var deadline = Stopwatch.StartNew();
        while (!listening.Task.IsCompleted)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"{name} exited with {process.ExitCode} while starting:\n{server.Tail()}");
            }
            if (deadline.Elapsed > TimeSpan.FromSeconds(90))
            {
                await server.DisposeAsync();
                throw new TimeoutException($"{name} printed no \"Now listening on\" line:\n{server.Tail()}");
            }
            await Task.Delay(50);
        }
        server.BaseUrl = await listening.Task;
        using var http = new HttpClient { BaseAddress = server.BaseUrl, Timeout = TimeSpan.FromSeconds(2) };
        while (true)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"{name} exited with {process.ExitCode} while starting:\n{server.Tail()}");
            }
            try
            {
                using var response = await http.GetAsync(readyPath);
                if (response.IsSuccessStatusCode)
                {
                    break;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                // not listening yet
            }
            if (deadline.Elapsed > TimeSpan.FromSeconds(90))
            {
                await server.DisposeAsync();
                throw new TimeoutException($"{name} did not become ready on {server.BaseUrl}:\n{server.Tail()}");
            }
            await Task.Delay(100);
        }
        log.WriteLine($"   {name} pid {process.Id} ready on {server.BaseUrl} after {deadline.Elapsed.TotalSeconds:0.0} s");
        return server;
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_tail)
        {
            _fullLog?.WriteLine(line);
            _tail.Enqueue(line);
            while (_tail.Count > 200)
            {
                _tail.Dequeue();
            }
        }
    }

    public string Tail()
    {
        lock (_tail)
        {
            return string.Join('\n', _tail);
        }
    }

    /// <summary>Resident set size of the process, from /proc/&lt;pid&gt;/status (VmRSS).</summary>
    public long RssBytes() => ReadRss(_process.Id);

    public static long ReadRss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
        {
            // already gone
        }
        Children.Untrack(_process);
        _process.Dispose();
        lock (_tail)
        {
            _fullLog?.Dispose();
        }
    }

    /// <summary>Kestrel's own line (Microsoft.Hosting.Lifetime), which the baseline server prints too.</summary>
    [GeneratedRegex(@"Now listening on: (http://\S+)")]
    private static partial Regex ListeningAddress();
}

/// <summary>Kills the child processes this program started if it is stopped (SIGTERM, Ctrl+C) before disposing them.</summary>
internal static class Children
{
    private static readonly List<Process> Running = [];

    static Children()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => KillAll();
        Console.CancelKeyPress += (_, _) => KillAll();
    }

    public static void Track(Process process)
    {
        lock (Running)
        {
            Running.Add(process);
        }
    }

    public static void Untrack(Process process)
    {
        lock (Running)
        {
            Running.Remove(process);
        }
    }

    private static void KillAll()
    {
        lock (Running)
        {
            foreach (var process in Running)
            {
                try
                {
                    if (!process.HasExited)
                    {
                        process.Kill(entireProcessTree: true);
                    }
                }
                catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
                {
                    // gone already
                }
            }
        }
    }
}

/// <summary>Where the pieces are and how to start them.</summary>
public sealed record HarnessSettings
{
    /// <summary>The service's entry assembly (Release build of src/RealtimeChat).</summary>
    public string ServiceDll { get; init; } = DefaultServiceDll();

    /// <summary>This program's assembly, started again as the baseline server.</summary>
    public string BenchDll { get; init; } = typeof(HarnessSettings).Assembly.Location;

    /// <summary>A PostgreSQL server connection string; null runs on SQLite.</summary>
    public string? Postgres { get; init; }

    public string ServiceLogLevel { get; init; } = "Warning";

    /// <summary>More service settings (<c>--Key=value</c>), appended last so they win.</summary>
    public IReadOnlyList<string> ExtraServiceArgs { get; init; } = [];

    public TextWriter Log { get; init; } = Console.Out;

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "realtime-chat-service.slnx")))
            {
                return dir.FullName;
            }
        }
        return Directory.GetCurrentDirectory();
    }

    public static string DefaultServiceDll()
    {
#if DEBUG
        const string configuration = "Debug";
#else
        const string configuration = "Release";
#endif
        return Path.Combine(RepositoryRoot(), "src", "RealtimeChat", "bin", configuration, "net10.0", "RealtimeChat.dll");
    }
}

/// <summary>A chat service process on a fresh data directory (and a fresh PostgreSQL database when asked).</summary>
public sealed class ChatService : IAsyncDisposable
{
    public const string SigningKey = "bench-signing-key-0123456789abcdefghijklmnopqrs";

    private readonly string _dataDirectory;
    private readonly string? _database;
    private readonly string? _postgres;

    private ChatService(ServerProcess process, string dataDirectory, string? postgres, string? database)
    {
        Process = process;
        _dataDirectory = dataDirectory;
        _postgres = postgres;
        _database = database;
    }

    public ServerProcess Process { get; }

    public Uri BaseUrl => Process.BaseUrl;

    public static async Task<ChatService> StartAsync(HarnessSettings settings, IEnumerable<string>? extra = null, int? port = null)
    {
        var dataDirectory = Directory.CreateTempSubdirectory("chat-bench-").FullName;
        var arguments = new List<string>
        {
            $"--urls=http://127.0.0.1:{port ?? 0}",
            // ServerProcess reads the bound address from Kestrel's "Now listening on" line.
            "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Information",
            $"--Storage:DataDirectory={dataDirectory}",
            $"--Auth:SigningKey={SigningKey}",
            "--Messages:SendsPerSecond=100000",
            "--Messages:SendBurst=100000",
            // The scenarios measure capacity, not the per-user limits (noisy-neighbour sets its own).
            "--RateLimits:Edits:PerSecond=100000", "--RateLimits:Edits:Burst=100000",
            "--RateLimits:Conversations:PerSecond=100000", "--RateLimits:Conversations:Burst=100000",
            "--RateLimits:Uploads:PerSecond=100000", "--RateLimits:Uploads:Burst=100000",
            "--RateLimits:ReadMarkers:PerSecond=100000", "--RateLimits:ReadMarkers:Burst=100000",
            "--RateLimits:Reads:PerSecond=100000", "--RateLimits:Reads:Burst=100000",
            $"--Logging:LogLevel:Default={settings.ServiceLogLevel}",
            $"--Logging:LogLevel:Microsoft.AspNetCore={settings.ServiceLogLevel}",
            $"--Logging:LogLevel:Microsoft.AspNetCore.Hosting.Diagnostics={settings.ServiceLogLevel}",
        };
        string? database = null;
        if (settings.Postgres is { } server)
        {
            database = "chat_bench_" + Guid.NewGuid().ToString("N")[..12];
            await using (var connection = new Npgsql.NpgsqlConnection(server))
            {
                await connection.OpenAsync();
                await using var create = new Npgsql.NpgsqlCommand($"CREATE DATABASE {database}", connection);
                await create.ExecuteNonQueryAsync();
            }
            var builder = new Npgsql.NpgsqlConnectionStringBuilder(server) { Database = database };
            arguments.Add("--Database:Provider=Postgres");
            arguments.Add($"--Database:ConnectionString={builder.ConnectionString}");
        }
        arguments.AddRange(extra ?? []);
        arguments.AddRange(settings.ExtraServiceArgs);
        try
        {
            var process = await ServerProcess.StartAsync("service", settings.ServiceDll, arguments, "/health/ready", settings.Log);
            return new ChatService(process, dataDirectory, settings.Postgres, database);
        }
        catch
        {
            await DropDatabaseAsync(settings.Postgres, database);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Process.DisposeAsync();
        await DropDatabaseAsync(_postgres, _database);
        try
        {
            Directory.Delete(_dataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }

    private static async Task DropDatabaseAsync(string? server, string? database)
    {
        if (server is null || database is null)
        {
            return;
        }
        Npgsql.NpgsqlConnection.ClearAllPools();
        await using var connection = new Npgsql.NpgsqlConnection(server);
        await connection.OpenAsync();
        await using var drop = new Npgsql.NpgsqlCommand($"DROP DATABASE IF EXISTS {database} WITH (FORCE)", connection);
        await drop.ExecuteNonQueryAsync();
    }
}
