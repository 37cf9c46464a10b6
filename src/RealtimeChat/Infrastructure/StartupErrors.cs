using System.Data.Common;
using System.Globalization;
using System.Net.Sockets;
using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Infrastructure;

/// <summary>A start-up failure whose message already says which setting to change.</summary>
/// <remarks>An <see cref="InvalidOperationException"/>, as these failures were before they named their setting.</remarks>
public sealed class StartupException(string message, Exception? inner = null) : InvalidOperationException(message, inner);

public static partial class StartupErrors
{
    /// <summary>
    /// The lines to print for a failure to start, each naming the setting to change; null for a failure that is a
    /// bug rather than configuration (then the full exception is what helps).
    /// </summary>
    public static IReadOnlyList<string>? Describe(Exception exception)
    {
        // Distinct: an AggregateException's first inner exception is also its InnerException, and would be printed twice.
        var chain = Chain(exception).Distinct().ToList();
        if (chain.OfType<StartupException>().FirstOrDefault() is { } startup)
        {
            return [startup.Message];
        }
        var invalid = chain.OfType<OptionsValidationException>().ToList();
        if (invalid.Count > 0)
        {
            return [.. invalid.SelectMany(e => e.Failures.Select(failure => $"Invalid configuration: {WithFullKey(failure, e.OptionsType)}"))];
        }
        if (chain.OfType<InvalidOperationException>().Select(e => Unconvertible().Match(e.Message)).FirstOrDefault(m => m.Success) is { } unconvertible)
        {
            return [$"Invalid configuration: {unconvertible.Groups["key"].Value}: {WhyUnconvertible(unconvertible.Groups["value"].Value, unconvertible.Groups["type"].Value, chain)}."];
        }
        // Only the configured connection string goes through these builders, so what they refuse is that setting.
        if (chain.OfType<ArgumentException>().FirstOrDefault(e => e.TargetSite?.DeclaringType?.IsSubclassOf(typeof(DbConnectionStringBuilder)) == true) is { } keyword)
        {
            return [$"Invalid configuration: Database:ConnectionString: {WhyRefused(keyword)}."];
        }
        // Kestrel parses `urls` only when it starts listening, after everything else was set up.
        if (chain.OfType<FormatException>().FirstOrDefault(e => e.TargetSite?.DeclaringType == typeof(BindingAddress)) is { } url)
        {
            return [$"Cannot listen: {OneLine(url.Message)} Change `urls` (--urls=http://0.0.0.0:<port>, ASPNETCORE_URLS or urls in appsettings.json)."];
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
    public static Task<int> RunAsync(Func<Task> command) => RunAsync(async () =>
    {
        await command();
        return 0;
    });

    /// <summary>Runs a command that sets its own exit code; a configuration failure is printed as its lines on stderr and exits 1.</summary>
    public static async Task<int> RunAsync(Func<Task<int>> command)
    {
        try
        {
            return await command();
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

    /// <summary>Creates a directory that a setting names, so that failing to is reported as that setting.</summary>
    public static void CreateDirectory(string path, string setting)
    {
        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new StartupException($"{setting}: cannot create the directory '{path}': {OneLine(ex.Message)}", ex);
        }
    }

    /// <summary>
    /// Data annotations name the property ("The field MaxConnectionsPerUser must be …"); an operator sets
    /// "Realtime:MaxConnectionsPerUser". The options classes bound from configuration hold their section in <c>Section</c>.
    /// </summary>
    private static string WithFullKey(string failure, Type? optionsType)
    {
        var match = DataAnnotationFailure().Match(failure);
        var section = optionsType?.GetField("Section", BindingFlags.Public | BindingFlags.Static)?.GetRawConstantValue() as string;
        if (!match.Success || section is null)
        {
            return failure;
        }
        var error = match.Groups["error"].Value;
        var members = match.Groups["members"].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (members.Length == 0 || error.Contains(section + ":", StringComparison.Ordinal))
        {
            return error;
        }
        foreach (var member in members)
        {
            if (error.Contains($"The field {member} ", StringComparison.Ordinal))
            {
                return error.Replace($"The field {member} ", $"{section}:{member} ", StringComparison.Ordinal);
            }
        }
        return $"{string.Join(", ", members.Select(member => $"{section}:{member}"))}: {error}";
    }

    private static string WhyUnconvertible(string value, string typeName, IReadOnlyList<Exception> chain)
    {
        var type = AppDomain.CurrentDomain.GetAssemblies().Select(assembly => assembly.GetType(typeName)).FirstOrDefault(t => t is not null);
        if (type is { IsEnum: true })
        {
            return $"'{value}' is not one of {string.Join(", ", Enum.GetNames(type))}";
        }
        if (type == typeof(bool))
        {
            return $"'{value}' is not true or false";
        }
        if (type == typeof(TimeSpan))
        {
            return $"'{value}' is not a duration (hh:mm:ss, e.g. 00:00:30)";
        }
        if (type == typeof(double) || type == typeof(float) || type == typeof(decimal))
        {
            return $"'{value}' is not a number";
        }
        if (type is not null && type.IsPrimitive && type != typeof(char) && type != typeof(nint) && type != typeof(nuint))
        {
            if (!chain.OfType<OverflowException>().Any())
            {
                return $"'{value}' is not a whole number";
            }
            string Limit(string field) => Convert.ToString(type.GetField(field)?.GetValue(null), CultureInfo.InvariantCulture) ?? "?";
            return $"'{value}' is out of range ({Limit("MinValue")} to {Limit("MaxValue")})";
        }
        return $"'{value}' is not a valid {type?.Name ?? typeName}";
    }

    private static string WhyRefused(ArgumentException refused)
    {
        var message = refused.ParamName is { } name
            ? refused.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal)
            : refused.Message;
        return refused.InnerException switch
        {
            // Npgsql's answer to a keyword it does not know.
            KeyNotFoundException => $"'{refused.ParamName}' is not a connection string keyword",
            { } inner => $"{message.TrimEnd('.')}: {inner.Message.TrimEnd('.')}",
            null => message.TrimEnd('.'),
        };
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

    // The configuration binder's message, the same for every setting it cannot convert; it names the full key.
    [GeneratedRegex(@"^Failed to convert configuration value '(?<value>.*)' at '(?<key>[^']+)' to type '(?<type>[^']+)'\.$", RegexOptions.Singleline)]
    private static partial Regex Unconvertible();

    [GeneratedRegex(@"^DataAnnotation validation failed for '[^']*' members: '(?<members>[^']*)' with the error: '(?<error>.*)'\.$", RegexOptions.Singleline)]
    private static partial Regex DataAnnotationFailure();
}
