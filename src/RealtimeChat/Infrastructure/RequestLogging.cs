using System.Diagnostics;
using Microsoft.Extensions.Logging.Console;

namespace RealtimeChat.Infrastructure;

public static class RequestLogging
{
    public const string Setting = "Logging:Requests";

    /// <summary>
    /// Quiet defaults, below every configuration source so appsettings, environment and command line still win:
    /// the framework's lines per request off (also when the service runs from a directory without appsettings.json),
    /// and a UTC timestamp on every console line.
    /// </summary>
    public static void AddChatLoggingDefaults(this WebApplicationBuilder builder)
    {
        builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Memory.MemoryConfigurationSource
        {
            InitialData = new Dictionary<string, string?>
            {
                ["Logging:LogLevel:Default"] = "Information",
                ["Logging:LogLevel:Microsoft.AspNetCore"] = "Warning",
                // Four lines per request to the homeserver (start, send, answer, end) would be most of a bridge's log;
                // the bridge logs what fails itself.
                ["Logging:LogLevel:System.Net.Http.HttpClient"] = "Warning",
                // Its only Error is "Hosting failed to start" with a stack trace; Program prints that failure as one
                // line naming the setting. A crashed background service is still logged, at Critical.
                ["Logging:LogLevel:Microsoft.Extensions.Hosting.Internal.Host"] = "Critical",
            },
        });
        // Without a formatter name the console logger ignores the formatter options below and reads its obsolete own.
        builder.Services.PostConfigure<ConsoleLoggerOptions>(console => console.FormatterName ??= ConsoleFormatterNames.Simple);
        builder.Services.PostConfigure<SimpleConsoleFormatterOptions>(console =>
        {
            if (console.TimestampFormat is null)
            {
                console.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                console.UseUtcTimestamp = true;
            }
        });
        builder.Services.PostConfigure<JsonConsoleFormatterOptions>(console =>
        {
            if (console.TimestampFormat is null)
            {
                console.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                console.UseUtcTimestamp = true;
            }
        });
    }

    /// <summary>
    /// With <c>Logging:Requests=true</c>, one structured line per request at Information. Off by default: at
    /// 100,000 requests that is 100 MB of logs. Rate-limited refusals are never logged, only counted
    /// (<c>chat_rate_limited_total</c>), so a flood of them cannot become a flood of log lines.
    /// </summary>
    public static IApplicationBuilder UseRequestLogging(this IApplicationBuilder app, IConfiguration configuration)
    {
        if (!configuration.GetValue<bool>(Setting))
        {
            return app;
        }
        var logger = app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger("RealtimeChat.Requests");
        return app.Use(async (context, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            try
            {
                await next(context);
            }
            finally
            {
                var status = context.Response.StatusCode;
                if (status != StatusCodes.Status429TooManyRequests)
                {
                    logger.LogInformation("{Method} {Path} {Status} {ElapsedMs:0.0} ms {UserId}",
                        context.Request.Method, context.Request.Path.Value, status,
                        Stopwatch.GetElapsedTime(started).TotalMilliseconds, context.User.FindFirst("sub")?.Value ?? "-");
                }
            }
        });
    }
}
