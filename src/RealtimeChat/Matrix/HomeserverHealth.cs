using System.Net;
using Microsoft.Extensions.Options;
using Prometheus;

namespace RealtimeChat.Matrix;

/// <summary>
/// Whether the homeserver answers at all. While it does not, no room tries on its own: one probe asks
/// <c>/_matrix/client/versions</c> every <c>Matrix:HealthProbeInterval</c> at most, and when it answers every room
/// resumes at once (per-room back-off is kept for what only concerns one room, such as a 429).
/// </summary>
public sealed class HomeserverHealth(IHttpClientFactory httpClients, IOptions<MatrixOptions> options, TimeProvider time, ILogger<HomeserverHealth> logger)
{
    private static readonly Gauge Up = Metrics.CreateGauge("matrix_homeserver_up", "1 while the homeserver answers, 0 while the bridge waits for it.");
    private static readonly TimeSpan FirstProbeDelay = TimeSpan.FromMilliseconds(200);

    private readonly Lock _lock = new();
    private DateTimeOffset _nextProbe;
    private TimeSpan _probeDelay = FirstProbeDelay;

    public bool IsDown { get; private set; }

    /// <summary>When the next probe is due (only meaningful while <see cref="IsDown"/>).</summary>
    public DateTimeOffset NextProbeAt
    {
        get
        {
            lock (_lock)
            {
                return _nextProbe;
            }
        }
    }

    public void ReportDown(string reason)
    {
        lock (_lock)
        {
            if (IsDown)
            {
                return;
            }
            IsDown = true;
            _probeDelay = FirstProbeDelay;
            _nextProbe = time.GetUtcNow() + _probeDelay;
        }
        Up.Set(0);
        logger.LogWarning("Homeserver not answering ({Reason}); Matrix delivery waits for it and resumes when it answers", reason);
    }

    /// <summary>How the homeserver answers <c>/_matrix/client/versions</c> within 5 s; null when it does not answer at all.</summary>
    public static async Task<HttpStatusCode?> VersionsStatusAsync(IHttpClientFactory httpClients, Uri? homeserver, CancellationToken cancellationToken)
    {
        using var http = httpClients.CreateClient(nameof(HomeserverHealth));
        http.BaseAddress = homeserver;
        http.Timeout = TimeSpan.FromSeconds(5);
        try
        {
            using var response = await http.GetAsync("/_matrix/client/versions", cancellationToken);
            return response.StatusCode;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <returns>Whether the homeserver answered (then it is up again).</returns>
    public async Task<bool> ProbeAsync(CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var answered = await VersionsStatusAsync(httpClients, settings.HomeserverUrl, cancellationToken)
            is { } status && status is not (HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout);
        lock (_lock)
        {
            if (!answered)
            {
                _probeDelay = _probeDelay * 2 < settings.HealthProbeInterval ? _probeDelay * 2 : settings.HealthProbeInterval;
                _nextProbe = time.GetUtcNow() + _probeDelay;
                return false;
            }
            IsDown = false;
        }
        Up.Set(1);
        logger.LogInformation("Homeserver answers again; Matrix delivery resumes");
        return true;
    }

    public void ReportUp()
    {
        if (IsDown)
        {
            lock (_lock)
            {
                IsDown = false;
            }
            Up.Set(1);
        }
    }
}
