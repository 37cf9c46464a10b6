using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Matrix;

public enum MatrixMode
{
    /// <summary>We are an Application Service: app users are ghost users; the homeserver pushes events to us.</summary>
    Appservice,

    /// <summary>One service account sends for everyone and reads with /sync (the seed's design).</summary>
    Client,
}

/// <summary>
/// The bridge's settings (section <c>Matrix</c>; the seed's <c>MATRIX_*</c> environment variables map onto it).
/// Tokens may be given directly or as files; they are never logged.
/// </summary>
public sealed class MatrixOptions : IValidatableObject
{
    public const string Section = "Matrix";

    public bool Enabled { get; set; }

    public MatrixMode Mode { get; set; } = MatrixMode.Appservice;

    /// <summary>Client-Server API base, e.g. <c>http://matrix-synapse:8008</c>.</summary>
    public Uri? HomeserverUrl { get; set; }

    /// <summary>The homeserver's server_name, the part after ':' in user ids.</summary>
    public string? ServerName { get; set; }

    public string AppserviceId { get; set; } = "nova-chat";

    public string? AsToken { get; set; }
    public string? AsTokenFile { get; set; }
    public string? HsToken { get; set; }
    public string? HsTokenFile { get; set; }

    /// <summary>The appservice's own user (the bridge bot), which creates rooms and manages membership.</summary>
    public string SenderLocalpart { get; set; } = "nova-bridge";

    /// <summary>Ghost user localpart prefix: <c>@{prefix}{uuid without dashes}:{server}</c>.</summary>
    public string UserPrefix { get; set; } = "nova_";

    /// <summary>Room alias localpart prefix: <c>#{prefix}{conversation id without dashes}:{server}</c>.</summary>
    public string AliasPrefix { get; set; } = "nova_";

    /// <summary>The URL the homeserver should push transactions to (goes into the registration file).</summary>
    public Uri? AppserviceUrl { get; set; }

    public bool ReceiveEphemeral { get; set; } = true;

    // Client mode
    public string? AccessToken { get; set; }
    public string? AccessTokenFile { get; set; }
    public string? UserId { get; set; }
    public string? Password { get; set; }
    public string? PasswordFile { get; set; }

    /// <summary>Conversations whose actions are being sent at the same time.</summary>
    [Range(1, 256)]
    public int MaxRoomsInFlight { get; set; } = 8;

    /// <summary>How often the dispatcher looks for due actions when nothing woke it.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(45);

    /// <summary>Client mode: how long one /sync long-poll waits for events (must stay below RequestTimeout).</summary>
    public TimeSpan SyncTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public TimeSpan MinRetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>How long to wait before attempt <paramref name="attempt"/> + 1: the homeserver's retry_after if it gave one
    /// (capped), else exponential from <see cref="MinRetryDelay"/> to <see cref="MaxRetryDelay"/> with jitter.</summary>
    public TimeSpan RetryDelay(int attempt, TimeSpan? retryAfter)
    {
        if (retryAfter is { } wait && wait > TimeSpan.Zero)
        {
            return wait < MaxRetryDelay ? wait : MaxRetryDelay;
        }
        var exponential = MinRetryDelay * Math.Pow(2, Math.Min(attempt - 1, 20));
        var capped = exponential < MaxRetryDelay ? exponential : MaxRetryDelay;
        // Jitter so rooms that failed together do not retry together.
        return capped * (0.8 + Random.Shared.NextDouble() * 0.4);
    }

    /// <summary>Failures not understood (neither transient nor permanent) an action may have before it is parked.</summary>
    [Range(1, 1000)]
    public int MaxAttempts { get; set; } = 10;

    /// <summary>While the homeserver does not answer, the longest wait between two probes of it.</summary>
    public TimeSpan HealthProbeInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a portal's lease lasts without renewal (another instance takes a dead holder's portals after it).</summary>
    public TimeSpan PortalLease { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>Messages posted into a room created for a conversation that began before Matrix was enabled.</summary>
    [Range(0, 10_000)]
    public int BackfillLimit { get; set; } = 100;

    /// <summary>Relations to events not known yet that one delivery (transaction, sync batch) may park for later.</summary>
    [Range(0, 100_000)]
    public int MaxDeferredPerBatch { get; set; } = 100;

    /// <summary>
    /// Appservice mode: refuse once a push whose transaction id skips one, so that Synapse sends a transaction it left
    /// unsent first (see AppserviceTransactionGaps). Off when other appservices share the homeserver's numbering.
    /// </summary>
    public bool RecoverTransactionGaps { get; set; } = true;

    /// <summary>
    /// Appservice mode: after a pause in pushes, a room's next push makes the bridge read the room's timeline back to the
    /// last event it handled from it, so that the events Synapse drops when it stops (those it had queued in memory)
    /// still arrive, in order (see RoomTimelines).
    /// </summary>
    public bool ReadRoomTimelines { get; set; } = true;

    /// <summary>A pause in pushes at least this long (every homeserver restart makes one) has rooms read before their next
    /// push is applied; zero reads before every push.</summary>
    public TimeSpan TimelineReadAfterPause { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long after a room's last push it is read once more, for events dropped behind that push.</summary>
    public TimeSpan TimelineSweepInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long sent outbox rows and seen appservice transaction ids are kept.</summary>
    public TimeSpan Retention { get; set; } = TimeSpan.FromDays(7);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!Enabled)
        {
            yield break;
        }
        if (HomeserverUrl is null)
        {
            yield return new ValidationResult("Matrix:HomeserverUrl is required when Matrix is enabled.", [nameof(HomeserverUrl)]);
        }
        if (string.IsNullOrWhiteSpace(ServerName))
        {
            yield return new ValidationResult("Matrix:ServerName is required when Matrix is enabled.", [nameof(ServerName)]);
        }
        if (Mode == MatrixMode.Appservice && (AsToken ?? AsTokenFile) is null)
        {
            yield return new ValidationResult("Matrix:AsToken (or AsTokenFile) is required in appservice mode.", [nameof(AsToken)]);
        }
        if (Mode == MatrixMode.Appservice && (HsToken ?? HsTokenFile) is null)
        {
            yield return new ValidationResult("Matrix:HsToken (or HsTokenFile) is required in appservice mode.", [nameof(HsToken)]);
        }
        if (Mode == MatrixMode.Client && UserId is null)
        {
            yield return new ValidationResult("Client mode needs Matrix:UserId (the service account, e.g. @nova-service:example.org).", [nameof(UserId)]);
        }
        if (Mode == MatrixMode.Client && (AccessToken ?? AccessTokenFile ?? Password ?? PasswordFile) is null)
        {
            yield return new ValidationResult("Client mode needs Matrix:AccessToken (or AccessTokenFile), or Matrix:Password (or PasswordFile).", [nameof(AccessToken)]);
        }
        if (TimelineReadAfterPause < TimeSpan.Zero)
        {
            yield return new ValidationResult("Matrix:TimelineReadAfterPause must not be negative.", [nameof(TimelineReadAfterPause)]);
        }
        if (TimelineSweepInterval <= TimeSpan.Zero)
        {
            yield return new ValidationResult("Matrix:TimelineSweepInterval must be positive.", [nameof(TimelineSweepInterval)]);
        }
        if (Mode == MatrixMode.Client && SyncTimeout >= RequestTimeout)
        {
            yield return new ValidationResult("Matrix:SyncTimeout must be shorter than Matrix:RequestTimeout.", [nameof(SyncTimeout)]);
        }
    }

    internal static string? Secret(string? value, string? file) => value ?? (file is null ? null : File.ReadAllText(file).Trim());
}
