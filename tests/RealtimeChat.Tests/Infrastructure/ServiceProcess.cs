using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.RegularExpressions;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>The service as its own process (what operators run), with its console output collected line by line.</summary>
public sealed partial class ServiceProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly ConcurrentQueue<string> _outputLines = new();
    private readonly ConcurrentQueue<string> _errorLines = new();
    private readonly Func<Task> _cleanup;

    private ServiceProcess(Process process, Func<Task> cleanup)
    {
        _process = process;
        _cleanup = cleanup;
    }

    /// <summary>Standard output and standard error, as they arrived.</summary>
    public IReadOnlyList<string> Lines => [.. _lines];

    public IReadOnlyList<string> OutputLines => [.. _outputLines];

    public IReadOnlyList<string> ErrorLines => [.. _errorLines];

    public Process Process => _process;

    public Uri? BaseAddress { get; private set; }

    /// <summary>Starts the service on a fresh data directory and database (as the suite is configured) with these arguments.</summary>
    public static async Task<ServiceProcess> StartAsync(params string[] arguments)
    {
        var dataDirectory = Directory.CreateTempSubdirectory("chat-process-").FullName;
        var (settings, drop) = await TestDatabase.CreateAsync(dataDirectory);
        var args = new List<string> { $"--Storage:DataDirectory={dataDirectory}" };
        if (!arguments.Any(a => a.StartsWith("--Auth:", StringComparison.Ordinal)))
        {
            args.Add($"--Auth:SigningKey={ChatServer.SigningKey}");
        }
        args.AddRange(settings.Select(s => $"--{s.Key}={s.Value}"));
        args.AddRange(arguments);
        // Run from a directory without appsettings.json, as a deployment that configures only through the environment.
        return Start(args, workingDirectory: dataDirectory, cleanup: async () =>
        {
            await drop();
            Directory.Delete(dataDirectory, recursive: true);
        });
    }

    /// <summary>Starts the service with exactly these arguments.</summary>
    /// <param name="dll">Another build of the service (a previous version); this one's by default.</param>
    /// <param name="environment">A container's environment: given, none of the test run's own settings (MATRIX_*,
    /// Section__Key) leak in, only these.</param>
    public static ServiceProcess Start(IEnumerable<string> arguments, string? workingDirectory = null, Func<Task>? cleanup = null, string? dll = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null)
        {
            start.WorkingDirectory = workingDirectory;
        }
        start.ArgumentList.Add(dll ?? typeof(ChatApp).Assembly.Location);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        // Console formatting as operators see it, not a developer's environment.
        start.Environment.Remove("Logging__Console__FormatterName");
        if (environment is not null)
        {
            foreach (var name in start.Environment.Keys.Where(k => k.StartsWith("MATRIX_", StringComparison.Ordinal) || k.Contains("__", StringComparison.Ordinal)).ToList())
            {
                start.Environment.Remove(name);
            }
            foreach (var (name, value) in environment)
            {
                start.Environment[name] = value;
            }
        }
        var process = new Process { StartInfo = start };
        var service = new ServiceProcess(process, cleanup ?? (() => Task.CompletedTask));
        process.OutputDataReceived += (_, e) =>
        {
            service.Add(e.Data);
            if (e.Data is not null)
            {
                service._outputLines.Enqueue(e.Data);
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            service.Add(e.Data);
            if (e.Data is not null)
            {
                service._errorLines.Enqueue(e.Data);
            }
        };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return service;
    }

    /// <summary>A client of a service the tests started (tokens signed with <see cref="ChatServer.SigningKey"/>), as this user.</summary>
    public static HttpClient Client(Uri address, Guid userId)
    {
        var client = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", RealtimeChat.Identity.DevelopmentTokens.Mint(
            System.Text.Encoding.UTF8.GetBytes(ChatServer.SigningKey), userId, TimeSpan.FromHours(1), new RealtimeChat.Identity.AuthOptions()));
        return client;
    }

    /// <summary>Waits for the "Now listening on" line (simple or JSON console format) and takes the address from it.</summary>
    public async Task<Uri> WaitListeningAsync()
    {
        var line = await WaitForLineAsync(l => l.Contains("Now listening on: ", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        BaseAddress = new Uri(ListeningAddress().Match(line).Groups[1].Value);
        return BaseAddress;
    }

    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var found = _lines.FirstOrDefault(match);
            if (found is not null)
            {
                return found;
            }
            if (_process.HasExited && DateTime.UtcNow > deadline - timeout + TimeSpan.FromSeconds(1))
            {
                throw new InvalidOperationException($"The service exited ({_process.ExitCode}):\n{string.Join('\n', _lines)}");
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"No matching line in:\n{string.Join('\n', _lines)}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>Waits for the process to exit on its own (and its output to be read) and returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    private void Add(string? line)
    {
        if (line is not null)
        {
            _lines.Enqueue(line);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
        await _cleanup();
    }

    [GeneratedRegex(@"Now listening on: (http://[^\s""]+)")]
    private static partial Regex ListeningAddress();
}
