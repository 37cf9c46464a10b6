using System.ComponentModel.DataAnnotations;

namespace RealtimeChat.Identity;

public sealed class AuthOptions : IValidatableObject
{
    public const string Section = "Auth";

    /// <summary>HS256 shared secret (at least 32 bytes of UTF-8). Prefer <see cref="SigningKeyFile"/> in production.</summary>
    public string? SigningKey { get; set; }

    public string? SigningKeyFile { get; set; }

    /// <summary>OpenID Connect authority whose JWKS signs RS256 tokens; replaces the shared secret.</summary>
    public string? Authority { get; set; }

    public string? Issuer { get; set; }

    public string? Audience { get; set; }

    public bool RequireHttpsMetadata { get; set; } = true;

    /// <summary>
    /// How long a display name read from the database is used before it is read again: another instance on the same
    /// database may have stored a newer one (the bridge names ghosts with it).
    /// </summary>
    public TimeSpan ProfileCacheLifetime { get; set; } = TimeSpan.FromMinutes(1);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (SigningKey is not null && SigningKey.Length < 32)
        {
            yield return new ValidationResult("Auth:SigningKey must be at least 32 characters.", [nameof(SigningKey)]);
        }
        if (ProfileCacheLifetime <= TimeSpan.Zero || ProfileCacheLifetime > TimeSpan.FromDays(1))
        {
            yield return new ValidationResult("Auth:ProfileCacheLifetime must be between 00:00:00.001 and 1.00:00:00.", [nameof(ProfileCacheLifetime)]);
        }
    }
}
