using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Realtime;

public sealed class RealtimeOptions
{
    public const string Section = "Realtime";

    /// <summary>Ping frames keep NATs open and let us notice dead peers.</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>A connection that does not answer a ping within this time is closed.</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Frames waiting for a slow client before it is disconnected instead of buffered without bound.</summary>
    [Range(1, 1_000_000)]
    public int SendQueueLimit { get; set; } = 1024;

    /// <summary>Most events replayed for one conversation on resume; past it the client is told to resync over REST.</summary>
    [Range(1, 100_000)]
    public int MaxResumeEvents { get; set; } = 1000;

    [Range(1024, 1_048_576)]
    public int MaxClientFrameBytes { get; set; } = 16 * 1024;

    /// <summary>A user's typing notices for one conversation are relayed at most once per this, from all their sockets together.</summary>
    public TimeSpan TypingThrottle { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Open sockets one user may hold (all devices and tabs). Each costs memory and multiplies fan-out, so one user
    /// with thousands of them slows delivery to everyone; past the cap a new socket is closed with 4029.
    /// </summary>
    [Range(1, 100_000)]
    public int MaxConnectionsPerUser { get; set; } = 16;
}

/// <summary>Close codes (RFC 6455 private range) a client acts on; listed in the README.</summary>
public static class CloseCodes
{
    /// <summary>The connection's access token expired: reconnect with a fresh token (or send an auth frame before expiry).</summary>
    public const int TokenExpired = 4001;

    /// <summary>An auth frame carried a token for another user.</summary>
    public const int TokenRefused = 4003;

    /// <summary>The user already holds Realtime:MaxConnectionsPerUser sockets: close one before opening another.</summary>
    public const int TooManyConnections = 4029;
}
