using System.Data.Common;
using System.Net.Sockets;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Infrastructure;

/// <summary>A start-up failure whose message already says which setting to change.</summary>
/// <remarks>An <see cref="InvalidOperationException"/>, as these failures were before they named their setting.</remarks>
public sealed class StartupException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

public static class StartupErrors
{
    /// <summary>
    /// The lines to print for a failure to start, each naming the setting to change; null for a failure that is a
    /// bug rather than configuration (then the full exception is what helps).
    /// </summary>
    public static IReadOnlyList<string>? Describe(Exception exception)
    {
        var chain = Chain(exception).ToList();
        if (chain.OfType<StartupException>().FirstOrDefault() is { } startup)
        {
            return [startup.Message];
        }
        if (chain.OfType<OptionsValidationException>().FirstOrDefault() is { } invalid)
        {
            return [.. invalid.Failures.Select(failure => $"Invalid configuration: {failure}")];
        }
        if (chain.OfType<IOException>().FirstOrDefault(e => e.Message.StartsWith("Failed to bind", StringComparison.Ordinal)) is { } bind)
        {
            var inUse = chain.Any(e => e is SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } ||
                e.GetType().Name == "AddressInUseException");
            return [$"Cannot listen: {OneLine(bind.Message)} " + (inUse
                ? "Another process uses the port: stop it or change `urls` (--urls=http://0.0.0.0:<port>, ASPNETCORE_URLS or urls in appsettings.json)."
                : "Change `urls` (--urls=http://0.0.0.0:<port>, ASPNETCORE_URLS or urls in appsettings.json).")];
        }
        if (chain.OfType<DbException>().FirstOrDefault() is { } database)
        {
            return [$"Database unreachable or refusing the service: {OneLine(database.Message)} Check Database:ConnectionString (and Database:Provider)."];
        }
        return null;
    }

    /// <summary>Runs a command; a configuration failure is printed as its lines on stderr and exits 1.</summary>
    public static async Task<int> RunAsync(Func<Task> command)
    {
        try
        {
            await command();
            return 0;
        }
        catch (Exception ex) when (Describe(ex) is { } lines)
        {
            foreach (var line in lines)
            {
                Console.Error.WriteLine(line);
            }
            return 1;
        }
    }

    private static IEnumerable<Exception> Chain(Exception exception)
    {
        for (Exception? current = exception; current is not null; current = current.InnerException)
        {
            yield return current;
            if (current is AggregateException aggregate)
            {
                foreach (var inner in aggregate.InnerExceptions.SelectMany(Chain))
                {
                    yield return inner;
                }
            }
        }
    }

    private static string OneLine(string message)
    {
        var line = message.ReplaceLineEndings(" ").Trim();
        return line.EndsWith('.') ? line : line + ".";
    }
}
