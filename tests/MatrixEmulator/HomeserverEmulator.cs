using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace MatrixEmulator;

/// <summary>
/// An emulated Synapse 1.67 homeserver on a real loopback socket. Start it, point the service under test at
/// <see cref="BaseUrl"/>, act as Matrix users with <see cref="CreateUser"/>, inject faults with <see cref="Faults"/>,
/// and inspect rooms, timelines, requests and what was pushed to the appservice.
/// </summary>
public sealed class HomeserverEmulator : IAsyncDisposable
{
    private readonly Homeserver _hs;
    private readonly AppservicePusher? _pusher;
    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private WebApplication? _app;

    private HomeserverEmulator(WebApplication app, Homeserver hs, Uri baseUrl, FaultInjector faults, RequestLog requests)
    {
        _app = app;
        _hs = hs;
        _pusher = hs.Pusher;
        BaseUrl = baseUrl;
        Faults = faults;
        Requests = requests;
    }

    /// <summary>e.g. <c>http://127.0.0.1:54321/</c>; the same after a restart.</summary>
    public Uri BaseUrl { get; }

    public EmulatorOptions Options => _hs.Options;

    public string ServerName => _hs.Options.ServerName;

    public FaultInjector Faults { get; }

    public RequestLog Requests { get; }

    /// <summary>What was pushed to the appservice and how it answered; only when an appservice is registered.</summary>
    public AppservicePusher Appservice => _pusher ?? throw new InvalidOperationException("No appservice is registered in EmulatorOptions.");

    /// <summary>False between <see cref="ShutDownAsync"/> and <see cref="StartAgainAsync"/>: connections are refused.</summary>
    public bool IsRunning => _app is not null;

    /// <summary>How many times the process was started again (0 until the first restart).</summary>
    public int Restarts { get; private set; }

    public static async Task<HomeserverEmulator> StartAsync(EmulatorOptions? options = null)
    {
        options ??= new EmulatorOptions();
        var state = new HomeserverState(options);
        var faults = new FaultInjector();
        var requests = new RequestLog();
        AppservicePusher? pusher = null;
        if (options.Appservice is { } registration)
        {
            pusher = new AppservicePusher(options, state, faults);
            state.EventPersisted = pusher.OnEvent;
            state.EphemeralPersisted = pusher.OnEphemeral;

            // Synapse creates the appservice's sender user at startup.
            state.CreateUser(registration.SenderLocalpart, null, isAppserviceUser: true);
        }

        var hs = new Homeserver(options, state, pusher);
        var app = await ListenAsync(hs, faults, requests, port: 0);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        pusher?.Start();
        return new HomeserverEmulator(app, hs, new Uri(address.TrimEnd('/') + "/"), faults, requests);
    }

    /// <summary>
    /// Simulates a restart of the Synapse process with its SQLite store: <see cref="ShutDownAsync"/>, a pause of
    /// <paramref name="downtime"/> (default <see cref="EmulatorOptions.RestartDowntime"/>, scaled) during which
    /// connections are refused, then <see cref="StartAgainAsync"/> on the same port. <paramref name="kill"/> as in
    /// <see cref="ShutDownAsync"/>.
    /// </summary>
    public async Task RestartAsync(TimeSpan? downtime = null, bool kill = false)
    {
        await ShutDownAsync(kill);
        await Task.Delay(downtime ?? Options.Scaled(Options.RestartDowntime));
        await StartAgainAsync();
    }

    /// <summary>
    /// Stops the process: the port closes (new connections are refused), requests in progress lose their connection
    /// (long-polls included), the push in flight is dropped and in-process <see cref="MatrixUser"/> actions throw
    /// <see cref="HttpRequestException"/>. What Synapse keeps only in memory is lost (send txnId cache, typing,
    /// rate-limit buckets, events queued for the appservice behind the push in flight); the store stays. By default
    /// it is a graceful stop (SIGTERM, what a deploy does), which fails the push in flight and marks the appservice
    /// down as 1.67 did when measured; <paramref name="kill"/> is a kill -9, which leaves the appservice's state alone.
    /// </summary>
    public async Task ShutDownAsync(bool kill = false)
    {
        await _lifecycle.WaitAsync();
        try
        {
            if (_app is not { } app)
            {
                return;
            }

            _app = null;
            _hs.State.Stop();
            using (var now = new CancellationTokenSource())
            {
                await now.CancelAsync();
                await app.StopAsync(now.Token);
            }

            await app.DisposeAsync();
            if (_pusher is not null)
            {
                await _pusher.StopAsync(graceful: !kill);
            }
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>Starts the process again on the same port with the same store (see <see cref="AppservicePusher"/> for what it resumes).</summary>
    public async Task StartAgainAsync()
    {
        await _lifecycle.WaitAsync();
        try
        {
            if (_app is not null)
            {
                return;
            }

            _app = await ListenAsync(_hs, Faults, Requests, BaseUrl.Port);
            _hs.State.Start();
            Restarts++;
            _pusher?.Start();
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    private static async Task<WebApplication> ListenAsync(Homeserver hs, FaultInjector faults, RequestLog requests, int port)
    {
        for (var attempt = 0; ; attempt++)
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, port));
            var app = builder.Build();
            app.Use((context, next) => HandleAsync(context, next, hs, faults, requests));
            ClientServerEndpoints.Map(app, hs);
            RoomEndpoints.Map(app, hs);
            SyncEndpoints.Map(app, hs);
            MediaEndpoints.Map(app, hs);
            app.MapFallback(_ => throw Errors.Unrecognized());
            try
            {
                await app.StartAsync();
                return app;
            }
            catch (IOException) when (port != 0 && attempt < 50)
            {
                // The old listener's port can take a moment to be free again.
                await app.DisposeAsync();
                await Task.Delay(20);
            }
        }
    }

    /// <summary>Creates a password user, as an admin would with register_new_matrix_user, and logs them in.</summary>
    public MatrixUser CreateUser(string localpart, string password = "password", string? displayName = null)
    {
        _hs.State.CreateUser(localpart, password, isAppserviceUser: false, displayName);
        return LoginAs(_hs.State.UserIdFor(localpart));
    }

    /// <summary>A new session (token and device) for an existing user, ghosts included.</summary>
    public MatrixUser LoginAs(string userId)
    {
        var session = _hs.State.CreateSession(userId);
        return new MatrixUser(_hs, BaseUrl, session.UserId, session.AccessToken, session.DeviceId);
    }

    /// <summary>Registers a ghost as the appservice would; returns its user id.</summary>

    public IReadOnlyList<RoomSnapshot> Rooms => _hs.State.RoomSnapshots();

    public RoomSnapshot? Room(string roomId) => _hs.State.RoomSnapshot(roomId);

    /// <summary>User ids with this membership ("join", "invite", "leave", "ban") in the room.</summary>
    public IReadOnlyList<string> Members(string roomId, string membership = "join") =>
        _hs.State.Read(() => Room(roomId) is null ? [] : _hs.State.EventsWhere(e => e.RoomId == roomId && e.Type == EventTypes.Member && e.StateKey is not null)
            .GroupBy(e => e.StateKey!).Select(g => g.Last()).Where(e => JsonText.String(e.Content["membership"]) == membership).Select(e => e.StateKey!).ToList());

    /// <summary>Every event of the room in order, state included.</summary>
    public IReadOnlyList<MatrixEvent> Timeline(string roomId) => _hs.State.EventsWhere(e => e.RoomId == roomId);

    public IReadOnlyList<MatrixEvent> EventsSentBy(string userId) => _hs.State.EventsWhere(e => e.Sender == userId);

    /// <summary>How many events of the room's timeline match; null <paramref name="sender"/> or <paramref name="type"/> matches any.</summary>
    public int CountEvents(string roomId, string? sender = null, string? type = null) =>
        _hs.State.EventsWhere(e => e.RoomId == roomId && (sender is null || e.Sender == sender) && (type is null || e.Type == type)).Count;

    public MatrixEvent? Event(string eventId) => _hs.State.EventById(eventId);

    /// <summary>The stored <c>origin_server_ts</c> of an event (an appservice's <c>?ts=</c> when it gave one); null if unknown.</summary>
    public long? OriginServerTs(string eventId) => _hs.State.EventById(eventId)?.OriginServerTs;

    /// <summary>
    /// Persists <paramref name="pdu"/> in <paramref name="roomId"/> as if it came over federation: no auth rules and no
    /// content validation, so wrong-typed <c>redacts</c>, <c>membership</c>, <c>name</c> or reaction <c>key</c> are
    /// stored and served as they are. It feeds /sync and the appservice like any event. Only <c>type</c> and
    /// <c>sender</c> must be strings; <c>event_id</c> and <c>origin_server_ts</c> are generated when absent. Returns the event id.
    /// </summary>
    public string InjectFederatedEvent(string roomId, JsonObject pdu) => _hs.State.InjectFederatedEvent(roomId, pdu);

    public string? ResolveAlias(string alias) => _hs.State.ResolveAlias(alias);

    public string? DisplayName(string userId) => (string?)_hs.State.FindUser(userId)?.DisplayName;

    public bool UserExists(string userId) => _hs.State.FindUser(userId) is not null;

    /// <summary>Bytes and content type of uploaded media, by mxc:// URI.</summary>
    public (byte[] Bytes, string ContentType)? Media(string mxcUri)
    {
        var mediaId = mxcUri[(mxcUri.LastIndexOf('/') + 1)..];
        return _hs.State.MediaById(mediaId) is { } item ? (item.Bytes, item.ContentType) : null;
    }

    /// <summary>Empties every rate-limit bucket, as if enough time had passed for <see cref="EmulatorOptions.MessageRateLimit"/> to refill.</summary>
    public void ResetRateLimits() => _hs.State.ResetRateLimits();

    /// <summary>Exceptions that escaped the emulator's own code as 500s; a non-empty list is an emulator bug.</summary>
    public IReadOnlyList<Exception> ServerErrors => _hs.ServerErrors;

    /// <summary>The current /sync position, to start an incremental sync from "now".</summary>
    public string CurrentSyncToken => _hs.State.CurrentSyncToken();

    public async ValueTask DisposeAsync()
    {
        if (_pusher is not null)
        {
            await _pusher.DisposeAsync();
        }

        if (_app is { } app)
        {
            _app = null;
            await app.StopAsync();
            await app.DisposeAsync();
        }

        _lifecycle.Dispose();
    }

    private static async Task HandleAsync(HttpContext context, RequestDelegate next, Homeserver hs, FaultInjector faults, RequestLog requests)
    {
        var at = DateTimeOffset.UtcNow;
        Fault? fault = null;
        try
        {
            (var latency, fault) = faults.Match(context.Request);
            if (latency > TimeSpan.Zero)
            {
                await Task.Delay(latency, context.RequestAborted);
            }

            switch (fault?.Kind)
            {
                case FaultKind.Down:
                    context.Abort();
                    return;
                case FaultKind.RateLimited:
                    await hs.WriteErrorAsync(context, Errors.LimitExceeded(fault.RetryAfter), fault.RetryAfterHeader);
                    return;
                case FaultKind.ServerError:
                    await Homeserver.WriteJsonAsync(context, new JsonObject { ["errcode"] = "M_UNKNOWN", ["error"] = "Internal server error" }, fault.Status);
                    return;
                case FaultKind.Forbidden:
                    await hs.WriteErrorAsync(context, Errors.Forbidden(fault.Error));
                    return;
                case FaultKind.AnswerLost:
                    // Served into a buffer nobody reads; the caller sees its connection drop.
                    var answer = context.Response.Body;
                    context.Response.Body = new MemoryStream();
                    try
                    {
                        await next(context);
                    }
                    finally
                    {
                        context.Response.Body = answer;
                        context.Abort();
                    }
                    return;
            }

            await next(context);
        }
        catch (MatrixException error) when (!context.Response.HasStarted)
        {
            await hs.WriteErrorAsync(context, error);
        }
        catch (Exception error) when (error is not OperationCanceledException && !context.Response.HasStarted)
        {
            hs.RecordServerError(error);
            await hs.WriteErrorAsync(context, new MatrixException(500, "M_UNKNOWN", "Internal server error"));
        }
        finally
        {
            var status = fault?.Kind is FaultKind.Down or FaultKind.AnswerLost ? 0 : context.Response.StatusCode;
            requests.Add(new LoggedRequest(at, context.Request.Method, context.Request.Path.Value ?? "", context.Request.QueryString.Value ?? "", status, fault?.Kind,
                context.Request.Headers.TransferEncoding.Any(e => e?.Contains("chunked", StringComparison.OrdinalIgnoreCase) == true)));
        }
    }
}
