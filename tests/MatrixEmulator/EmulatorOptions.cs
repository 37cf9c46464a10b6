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
    public required string Id { get; init; }
    public required Uri Url { get; init; }
    public required string AsToken { get; init; }
    public required string HsToken { get; init; }
    public required string SenderLocalpart { get; init; }
    public IReadOnlyList<string> UserNamespaces { get; init; } = [];
    public IReadOnlyList<string> AliasNamespaces { get; init; } = [];
    public IReadOnlyList<string> RoomNamespaces { get; init; } = [];
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

    internal bool IsInUserNamespace(string userId) => Matches(UserNamespaces, userId);

    internal bool IsInAliasNamespace(string alias) => Matches(AliasNamespaces, alias);

    internal bool IsInRoomNamespace(string roomId) => Matches(RoomNamespaces, roomId);

    // Synapse anchors namespace regexes at the start only (re.match), so a trailing ".*" is not needed to match.
    private static bool Matches(IReadOnlyList<string> patterns, string value) =>
        patterns.Any(p => Regex.IsMatch(value, "^(?:" + p + ")", RegexOptions.CultureInvariant));
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

    /// <summary>Serve <c>POST /_matrix/client/v1/appservice/{id}/ping</c>; Synapse 1.67 answered 400 M_UNRECOGNIZED.</summary>
    public bool AppservicePing { get; init; }

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

    /// <summary>How long one push or query to the appservice may take before it counts as failed (not scaled).</summary>
    public TimeSpan AppserviceRequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Synapse puts at most this many events in one transaction.</summary>
    public int MaxEventsPerTransaction { get; init; } = 100;

    internal TimeSpan Scaled(TimeSpan delay) => delay * TimeScale;
}
