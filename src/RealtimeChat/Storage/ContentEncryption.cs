using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using Microsoft.Extensions.Options;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Storage;

public sealed class EncryptionOptions
{
    public const string Section = "Encryption";

    /// <summary>Key id used for new writes. Defaults to the only configured key.</summary>
    public string? ActiveKeyId { get; set; }

    /// <summary>Key id → base64 of 32 random bytes. Old ids stay listed after a rotation so old rows stay readable.</summary>
    public Dictionary<string, string> Keys { get; set; } = [];

    /// <summary>A JSON file <c>{"active_key_id": "...", "keys": {"id": "base64"}}</c>, e.g. a mounted secret.</summary>
    public string? KeysFile { get; set; }
}

/// <summary>
/// AES-256-GCM for message content and media keys. A ciphertext is
/// <c>version(1) | key id length(1) | key id | nonce(12) | tag(16) | ciphertext</c>, so any configured key
/// can open it; the associated data binds it to its row, so ciphertexts cannot be swapped between rows.
/// </summary>
public sealed class ContentCipher
{
    private const byte FormatVersion = 1;
    private const int NonceSize = 12;
    private const int TagSize = 16;

    private readonly IReadOnlyDictionary<string, byte[]> _keys;

    private ContentCipher(string activeKeyId, IReadOnlyDictionary<string, byte[]> keys)
    {
        ActiveKeyId = activeKeyId;
        _keys = keys;
    }

    public string ActiveKeyId { get; }

    public IEnumerable<string> KeyIds => _keys.Keys;

    public byte[] Encrypt(ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> associatedData)
    {
        var keyId = Encoding.UTF8.GetBytes(ActiveKeyId);
        var header = 2 + keyId.Length;
        var output = new byte[header + NonceSize + TagSize + plaintext.Length];
        output[0] = FormatVersion;
        output[1] = (byte)keyId.Length;
        keyId.CopyTo(output, 2);
        var nonce = output.AsSpan(header, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(_keys[ActiveKeyId], TagSize);
        aes.Encrypt(nonce, plaintext, output.AsSpan(header + NonceSize + TagSize), output.AsSpan(header + NonceSize, TagSize), associatedData);
        return output;
    }

    public byte[] Decrypt(ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> associatedData)
    {
        if (ciphertext.Length < 2 || ciphertext[0] != FormatVersion)
        {
            throw new CryptographicException("Unknown content ciphertext format.");
        }
        var keyIdLength = ciphertext[1];
        var keyId = Encoding.UTF8.GetString(ciphertext.Slice(2, keyIdLength));
        if (!_keys.TryGetValue(keyId, out var key))
        {
            throw new CryptographicException($"Content key '{keyId}' is not configured.");
        }
        var body = ciphertext[(2 + keyIdLength)..];
        var plaintext = new byte[body.Length - NonceSize - TagSize];
        using var aes = new AesGcm(key, TagSize);
        aes.Decrypt(body[..NonceSize], body[(NonceSize + TagSize)..], body.Slice(NonceSize, TagSize), plaintext, associatedData);
        return plaintext;
    }

    public byte[] EncryptText(string text, Guid rowId) => Encrypt(Encoding.UTF8.GetBytes(text), rowId.ToByteArray());

    public string DecryptText(byte[] ciphertext, Guid rowId) => Encoding.UTF8.GetString(Decrypt(ciphertext, rowId.ToByteArray()));

    /// <summary>
    /// Builds the key ring from configuration. With no key configured at all, generates one into the data
    /// directory (mode 0600) on first run and keeps using it, so the embedded default needs no set-up.
    /// </summary>
    public static ContentCipher Create(EncryptionOptions options, StorageOptions storage, ILogger logger)
    {
        var configured = new Dictionary<string, string>(options.Keys);
        var activeKeyId = options.ActiveKeyId;
        if (options.KeysFile is not null)
        {
            KeyFile? file;
            try
            {
                file = JsonSerializer.Deserialize<KeyFile>(File.ReadAllText(options.KeysFile), ChatJson.Options);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException)
            {
                throw new StartupException($"Encryption:KeysFile: cannot read '{options.KeysFile}': {ex.Message}", ex);
            }
            if (file?.Keys is null)
            {
                throw new StartupException($"Encryption:KeysFile: '{options.KeysFile}' holds no keys (expected {{\"active_key_id\":…,\"keys\":{{\"id\":\"base64\"}}}}).");
            }
            foreach (var (id, key) in file.Keys)
            {
                configured[id] = key;
            }
            activeKeyId ??= file.ActiveKeyId;
        }

        if (configured.Count == 0)
        {
            var generatedPath = Path.Combine(storage.DataDirectory, "encryption-keys.json");
            var file = File.Exists(generatedPath)
                ? JsonSerializer.Deserialize<KeyFile>(File.ReadAllText(generatedPath), ChatJson.Options)!
                : GenerateKeyFile(generatedPath, logger);
            foreach (var (id, key) in file.Keys)
            {
                configured[id] = key;
            }
            activeKeyId ??= file.ActiveKeyId;
        }

        activeKeyId ??= configured.Count == 1
            ? configured.Keys.Single()
            : throw new StartupException("Encryption:ActiveKeyId must name one of the configured keys when several are configured.");

        var keys = new Dictionary<string, byte[]>();
        foreach (var (id, encoded) in configured)
        {
            if (Encoding.UTF8.GetByteCount(id) is 0 or > 255)
            {
                throw new StartupException($"Encryption:Keys: key id '{id}' must be 1 to 255 bytes.");
            }
            byte[] key;
            try
            {
                key = Convert.FromBase64String(encoded);
            }
            catch (FormatException)
            {
                throw new StartupException($"Encryption:Keys:{id} (or that key in Encryption:KeysFile) is not valid base64.");
            }
            if (key.Length != 32)
            {
                throw new StartupException($"Encryption:Keys:{id} (or that key in Encryption:KeysFile) must be 32 bytes (AES-256); it is {key.Length}.");
            }
            keys[id] = key;
        }
        if (!keys.ContainsKey(activeKeyId))
        {
            throw new StartupException($"Encryption:ActiveKeyId '{activeKeyId}' is not among the configured keys.");
        }
        return new ContentCipher(activeKeyId, keys);
    }

    /// <summary>
    /// Refuses to run with a key set that cannot read what is stored, naming the missing ids, then records the
    /// active key as used before any write can happen with it.
    /// </summary>
    public async Task VerifyAgainstStoredDataAsync(ChatDatabase database, TimeProvider time, CancellationToken cancellationToken)
    {
        await using var connection = await database.OpenAsync(cancellationToken);
        var used = await connection.QueryAsync<string>("SELECT key_id FROM encryption_keys_used");
        var missing = used.Where(id => !_keys.ContainsKey(id)).Order().ToList();
        if (missing.Count > 0)
        {
            throw new InvalidOperationException(
                $"Stored messages are encrypted with key id(s) {string.Join(", ", missing.Select(id => $"'{id}'"))}, " +
                "which are not configured. Add them to Encryption:Keys (they may stay inactive).");
        }
        await connection.ExecuteAsync(
            "INSERT INTO encryption_keys_used (key_id, first_used_at) VALUES (@ActiveKeyId, @now) ON CONFLICT (key_id) DO NOTHING",
            new { ActiveKeyId, now = time.UtcNowMicros() });
    }

    private static KeyFile GenerateKeyFile(string path, ILogger logger)
    {
        // Unique, not just dated: another instance generating its own key on the same day must not pass for this one in
        // VerifyAgainstStoredDataAsync (it would start, and neither could read what the other wrote).
        var id = $"local-{DateTime.UtcNow:yyyyMMdd}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
        var file = new KeyFile(id, new Dictionary<string, string> { [id] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) });
        StartupErrors.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!, "Storage:DataDirectory");
        SecretFiles.WriteOwnerOnly(path, JsonSerializer.Serialize(file, ChatJson.Options));
        logger.LogWarning(
            "No encryption key configured: generated content key {KeyId} into {Path}. Back it up; messages cannot be read without it.",
            id, path);
        return file;
    }

    private sealed record KeyFile(string? ActiveKeyId, Dictionary<string, string> Keys);
}
