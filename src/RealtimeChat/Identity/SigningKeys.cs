using System.Security.Cryptography;
using System.Text;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Identity;

public static class SigningKeys
{
    /// <summary>True when no key or identity provider is configured, so the service signs with the key it generated.</summary>
    public static bool IsGeneratedDevelopmentKey(AuthOptions auth) =>
        auth.SigningKey is null && auth.SigningKeyFile is null && auth.Authority is null;

    /// <summary>
    /// The HS256 key: configured value, configured file, or (development default) a key generated into the data
    /// directory so that the <c>token</c> command and the server agree without any set-up. Null with an Authority.
    /// </summary>
    public static byte[]? Resolve(AuthOptions auth, StorageOptions storage, ILogger? logger)
    {
        if (auth.SigningKey is not null)
        {
            return Encoding.UTF8.GetBytes(auth.SigningKey);
        }
        if (auth.SigningKeyFile is not null)
        {
            string key;
            try
            {
                key = File.ReadAllText(auth.SigningKeyFile).Trim();
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new StartupException($"Auth:SigningKeyFile: cannot read '{auth.SigningKeyFile}': {ex.Message}", ex);
            }
            if (key.Length < 32)
            {
                throw new StartupException($"Auth:SigningKeyFile: the key in '{auth.SigningKeyFile}' must be at least 32 characters.");
            }
            return Encoding.UTF8.GetBytes(key);
        }
        if (auth.Authority is not null)
        {
            return null;
        }

        var path = Path.Combine(storage.DataDirectory, "jwt-signing.key");
        if (!File.Exists(path))
        {
            StartupErrors.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!, "Storage:DataDirectory");
            SecretFiles.WriteOwnerOnly(path, Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)));
            logger?.LogWarning(
                "No Auth:SigningKey or Auth:Authority configured: generated a development signing key into {Path}. " +
                "Configure a real one before exposing this service.", path);
        }
        return Encoding.UTF8.GetBytes(File.ReadAllText(path).Trim());
    }
}
