using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.Extensions.Options;

namespace RealtimeChat.Identity;

/// <summary>
/// Validates a bearer token outside a request (a WebSocket's auth frame) exactly as the JWT bearer handler does for
/// requests: same handlers, same parameters, and the identity provider's signing keys when an Authority is set.
/// </summary>
public sealed class AccessTokenValidator(IOptionsMonitor<JwtBearerOptions> monitor)
{
    /// <returns>The token's user and expiry, or null if it is not a valid token.</returns>
    public async Task<(Guid UserId, DateTimeOffset ExpiresAt)?> ValidateAsync(string token, CancellationToken cancellationToken)
    {
        var jwt = monitor.Get(JwtBearerDefaults.AuthenticationScheme);
        var parameters = jwt.TokenValidationParameters.Clone();
        if (jwt.ConfigurationManager is { } manager)
        {
            var configuration = await manager.GetConfigurationAsync(cancellationToken);
            parameters.IssuerSigningKeys = [.. parameters.IssuerSigningKeys ?? [], .. configuration.SigningKeys];
            if (parameters.ValidIssuer is null && parameters.ValidIssuers is null)
            {
                parameters.ValidIssuer = configuration.Issuer;
            }
        }
        foreach (var handler in jwt.TokenHandlers)
        {
            var result = await handler.ValidateTokenAsync(token, parameters);
            if (result.IsValid && AuthenticationSetup.IsUserId(result.ClaimsIdentity?.FindFirst("sub")?.Value, out var userId))
            {
                return (userId, new DateTimeOffset(DateTime.SpecifyKind(result.SecurityToken.ValidTo, DateTimeKind.Utc)));
            }
        }
        return null;
    }

    /// <summary>When the token a request was authenticated with expires (its <c>exp</c> claim), if it says.</summary>
    public static DateTimeOffset? ExpiresAt(System.Security.Claims.ClaimsPrincipal user) =>
        long.TryParse(user.FindFirst("exp")?.Value, out var seconds) ? DateTimeOffset.FromUnixTimeSeconds(seconds) : null;
}
