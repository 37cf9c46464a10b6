using System.Security.Cryptography;

namespace MatrixEmulator;

/// <summary>Identifiers shaped like Synapse's, so code that parses or logs them sees realistic values.</summary>
internal static class Ids
{
    private const string Letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    private const string Upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    // Room versions >= 4 use the url-safe unpadded base64 of a 32-byte reference hash: '$' + 43 chars.
    public static string EventId() =>
        "$" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static string RoomId(string serverName) => $"!{RandomNumberGenerator.GetString(Letters, 18)}:{serverName}";

    public static string MediaId() => RandomNumberGenerator.GetString(Letters, 24);

    public static string DeviceId() => RandomNumberGenerator.GetString(Upper, 10);

    public static string AccessToken(string localpart) =>
        $"syt_{Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(localpart)).TrimEnd('=')}_{RandomNumberGenerator.GetString(Letters, 20)}_{RandomNumberGenerator.GetString(Letters + "0123456789", 6)}";
}
