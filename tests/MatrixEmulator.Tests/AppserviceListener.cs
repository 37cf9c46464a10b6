using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MatrixEmulator.Tests;

internal enum ListenerMode
{
    Ok,
    Answer500,

    /// <summary>Drop the connection without answering, after <see cref="AppserviceListener.AbortAfter"/>.</summary>
    Abort,
}

internal sealed record ReceivedRequest(DateTimeOffset At, string Method, string PathAndQuery, string? Authorization, JsonObject? Body, int Answered)
{
    /// <summary>When the handler finished (answered or aborted); null while it is still running.</summary>
    public DateTimeOffset? FinishedAt { get; set; }
}

/// <summary>A minimal appservice: records what the homeserver sends it and answers as the test says.</summary>
internal sealed class AppserviceListener : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Lock _gate = new();
    private readonly List<ReceivedRequest> _received = [];

    private AppserviceListener(WebApplication app) => _app = app;

    public Uri Url { get; private set; } = null!;

    public ListenerMode Mode { get; set; }

    public TimeSpan AbortAfter { get; set; }

    private TimeSpan _delayNext;

    /// <summary>
    /// The next request is answered only after <paramref name="delay"/>, even if the homeserver gave up on it meanwhile
    /// (a handler that does not watch RequestAborted, as an appservice busy storing the events would not).
    /// </summary>
    public void DelayNext(TimeSpan delay)
    {
        lock (_gate)
        {
            _delayNext = delay;
        }
    }

    public IReadOnlyList<ReceivedRequest> Received
    {
        get
        {
            lock (_gate)
            {
                // Copies, so FinishedAt is read under the lock.
                return _received.Select(r => r with { }).ToList();
            }
        }
    }

    public static async Task<AppserviceListener> StartAsync(ListenerMode mode = ListenerMode.Ok)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var listener = new AppserviceListener(app) { Mode = mode };
        app.Run(listener.HandleAsync);
        await app.StartAsync();
        listener.Url = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        return listener;
    }

    public ValueTask DisposeAsync() => _app.DisposeAsync();

    private async Task HandleAsync(HttpContext context)
    {
        var at = DateTimeOffset.UtcNow;
        using var reader = new StreamReader(context.Request.Body);
        var text = await reader.ReadToEndAsync();
        var body = string.IsNullOrEmpty(text) ? null : JsonNode.Parse(text) as JsonObject;
        var isTransaction = context.Request.Path.Value!.Contains("/transactions/", StringComparison.Ordinal);
        var mode = Mode;
        var status = mode switch
        {
            ListenerMode.Abort => 0,
            ListenerMode.Answer500 => 500,
            _ => isTransaction ? 200 : 404,
        };
        ReceivedRequest received;
        TimeSpan delay;
        lock (_gate)
        {
            received = new ReceivedRequest(at, context.Request.Method, context.Features.Get<IHttpRequestFeature>()!.RawTarget, context.Request.Headers.Authorization.FirstOrDefault(), body, status);
            _received.Add(received);
            (delay, _delayNext) = (_delayNext, TimeSpan.Zero);
        }

        try
        {
            await Task.Delay(delay);
            if (mode == ListenerMode.Abort)
            {
                await Task.Delay(AbortAfter);
                context.Abort();
                return;
            }

            context.Response.StatusCode = status;
            context.Response.ContentType = "application/json";
            // The appservice API: {} for a transaction; M_NOT_FOUND for a user or alias it does not have.
            await context.Response.WriteAsync(status == 404 ? """{"errcode":"M_NOT_FOUND"}""" : "{}");
        }
        catch (Exception error) when (error is IOException or OperationCanceledException)
        {
            // The homeserver dropped the connection before the answer (timeout or restart).
        }
        finally
        {
            lock (_gate)
            {
                received.FinishedAt = DateTimeOffset.UtcNow;
            }
        }
    }
}
