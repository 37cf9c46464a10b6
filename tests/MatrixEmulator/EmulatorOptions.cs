using System.Text.RegularExpressions;

namespace MatrixEmulator;

/// <summary>Where the homeserver pushes transactions and sends queries to the appservice.</summary>
public enum PushPathStyle
{
    /// <summary>Synapse 1.67: <c>{url}/transactions/{txnId}?access_token={hs_token}</c>, no Authorization header.</summary>
    Legacy,

    /// <summary>Newer homeservers: <c>{url}/_matrix/app/v1/transactions/{txnId}</c> with <c>Authorization: Bearer {hs_token}</c>.</summary>
    V1,
}

/// <summary>The appservice registration the emulated homeserver was given (the registration YAML).</summary>
public sealed record AppserviceRegistration
{
    private readonly Namespaces _users = Namespaces.None, _aliases = Namespaces.None, _rooms = Namespaces.None;

    public required string Id { get; init; }
    public required Uri Url { get; init; }
    public required string AsToken { get; init; }
    public required string HsToken { get; init; }
    public required string SenderLocalpart { get; init; }
    public IReadOnlyList<string> UserNamespaces { get => _users.Patterns; init => _users = new Namespaces(value); }
    public IReadOnlyList<string> AliasNamespaces { get => _aliases.Patterns; init => _aliases = new Namespaces(value); }
    public IReadOnlyList<string> RoomNamespaces { get => _rooms.Patterns; init => _rooms = new Namespaces(value); }
    public bool Exclusive { get; init; } = true;

    /// <summary>Push typing and receipts too; 1.67 did not for the recorded registration.</summary>
    public bool ReceiveEphemeral { get; init; }

    /// <summary>The registration used for the golden recordings, pointed at <paramref name="url"/>.</summary>
    public static AppserviceRegistration NovaChat(Uri url) => new()
    {
        Id = "nova-chat",
        Url = url,
        AsToken = "as_token_test_0123456789",
        HsToken = "hs_token_test_0123456789",
        SenderLocalpart = "nova-bridge",
        UserNamespaces = ["@nova_.*:localhost"],
        AliasNamespaces = ["#nova_.*:localhost"],
    };

    internal bool IsInUserNamespace(string userId) => _users.Matches(userId);

    internal bool IsInAliasNamespace(string alias) => _aliases.Matches(alias);

    internal bool IsInRoomNamespace(string roomId) => _rooms.Matches(roomId);

    /// <summary>A namespace list with its regexes built once, since they are checked per member per pushed event.</summary>
    private sealed class Namespaces
    {
        public static readonly Namespaces None = new([]);

        private readonly Regex[] _regexes;

        public Namespaces(IReadOnlyList<string> patterns)
        {
            Patterns = patterns;
            // Synapse anchors namespace regexes at the start only (re.match), so a trailing ".*" is not needed to match.
            _regexes = patterns.Select(p => new Regex("^(?:" + p + ")", RegexOptions.CultureInvariant)).ToArray();
        }

        public IReadOnlyList<string> Patterns { get; }

        public bool Matches(string value) => _regexes.Any(r => r.IsMatch(value));
    }
}

/// <summary>A Synapse-style per-user rate limit on sending events (<c>rc_message</c>).</summary>
public sealed record RateLimit(double PerSecond, int Burst);

public sealed record EmulatorOptions
{
    public string ServerName { get; init; } = "localhost";

    public AppserviceRegistration? Appservice { get; init; }

    public PushPathStyle PushPathStyle { get; init; } = PushPathStyle.Legacy;

    /// <summary>Serve <c>/_matrix/client/v1/media/*</c>; Synapse 1.67 answered 400 M_UNRECOGNIZED.</summary>
    public bool AuthenticatedMedia { get; init; }

    /// <summary>Send a <c>Retry-After</c> header with 429s as newer servers do; 1.67 put only <c>retry_after_ms</c> in the body.</summary>
    public bool RetryAfterHeader { get; init; }

    /// <summary>Rate limit for non-appservice users sending events; null = unlimited (the main recording raised the limits).</summary>
    public RateLimit? MessageRateLimit { get; init; }

    public long MaxUploadBytes { get; init; } = 50 * 1024 * 1024;

    /// <summary>Multiplies every homeserver-side delay below, so tests can run Synapse's back-off in milliseconds.</summary>
    public double TimeScale { get; init; } = 1.0;

    /// <summary>First delay of the transaction recoverer after a failed push (Synapse: 2 s, doubling per failure).</summary>
    public TimeSpan RecovererInitialDelay { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Cap of the recoverer back-off (Synapse: 2^9 s).</summary>
    public TimeSpan RecovererMaxDelay { get; init; } = TimeSpan.FromSeconds(512);

    /// <summary>
    /// How long one push or query to the appservice may take before it counts as failed (Synapse: 60 s). Not scaled
    /// unless <see cref="ScaleAppserviceRequestTimeout"/> is set.
    /// </summary>
    public TimeSpan AppserviceRequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Let <see cref="TimeScale"/> shrink <see cref="AppserviceRequestTimeout"/> too (60 s at 0.01 = 600 ms), to test a
    /// push that outlives the timeout and is retried while the appservice is still handling it. Off by default: an
    /// appservice under test on a loaded machine can take longer than a scaled timeout and would see spurious retries.
    /// </summary>
    public bool ScaleAppserviceRequestTimeout { get; init; }

    /// <summary>How long the in-memory send txnId cache keeps an entry (Synapse: 30 min; not scaled). A restart empties it.</summary>
    public TimeSpan SendTxnCacheLifetime { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>How long <see cref="HomeserverEmulator.RestartAsync"/> keeps the port closed (scaled; Synapse takes ~5 s to start).</summary>
    public TimeSpan RestartDowntime { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Synapse puts at most this many events in one transaction.</summary>
    public int MaxEventsPerTransaction { get; init; } = 100;

    internal TimeSpan Scaled(TimeSpan delay) => delay * TimeScale;

    internal TimeSpan EffectiveAppserviceRequestTimeout => ScaleAppserviceRequestTimeout ? Scaled(AppserviceRequestTimeout) : AppserviceRequestTimeout;
}
