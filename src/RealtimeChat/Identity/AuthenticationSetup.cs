using System.Security.Claims;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Identity;

public static class AuthenticationSetup
{
    public static IServiceCollection AddChatAuthentication(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<AuthOptions>().Bind(configuration.GetSection(AuthOptions.Section)).ValidateDataAnnotations().ValidateOnStart();

        services.AddAuthentication(JwtBearerDefaults.AuthenticationScheme).AddJwtBearer();
        services.AddOptions<JwtBearerOptions>(JwtBearerDefaults.AuthenticationScheme)
            .Configure<IOptions<AuthOptions>, IOptions<StorageOptions>, ILoggerFactory>((jwt, auth, storage, loggers) =>
            {
                var options = auth.Value;
                var key = SigningKeys.Resolve(options, storage.Value, loggers.CreateLogger(typeof(AuthenticationSetup)));
                jwt.MapInboundClaims = false;
                jwt.Authority = options.Authority;
                jwt.RequireHttpsMetadata = options.RequireHttpsMetadata;
                jwt.TokenValidationParameters = new TokenValidationParameters
                {
                    ValidateIssuer = options.Issuer is not null,
                    ValidIssuer = options.Issuer,
                    ValidateAudience = options.Audience is not null,
                    ValidAudience = options.Audience,
                    ValidateLifetime = true,
                    ClockSkew = TimeSpan.FromSeconds(30),
                    NameClaimType = "sub",
                    IssuerSigningKey = key is null ? null : new SymmetricSecurityKey(key),
                    ValidAlgorithms = key is null ? [SecurityAlgorithms.RsaSha256] : [SecurityAlgorithms.HmacSha256],
                };
                jwt.Events = new JwtBearerEvents
                {
                    // Browsers cannot set headers on a WebSocket handshake, nor on the requests an <audio> or <img>
                    // element makes for media (which must come from the element itself so that it can seek with Range).
                    OnMessageReceived = context =>
                    {
                        if ((context.Request.Path.StartsWithSegments("/ws") ||
                             (HttpMethods.IsGet(context.Request.Method) && context.Request.Path.StartsWithSegments("/api/v1/media"))) &&
                            context.Request.Query.TryGetValue("access_token", out var token))
                        {
                            context.Token = token;
                        }
                        return Task.CompletedTask;
                    },
                    OnTokenValidated = context =>
                    {
                        if (!IsUserId(context.Principal?.FindFirstValue("sub"), out _))
                        {
                            context.Fail("The token's sub claim is not a user id.");
                        }
                        return Task.CompletedTask;
                    },
                    OnChallenge = async context =>
                    {
                        context.HandleResponse();
                        var detail = context.AuthenticateFailure is SecurityTokenExpiredException
                            ? "The access token has expired."
                            : context.AuthenticateFailure is null ? "An access token is required." : "The access token is invalid.";
                        context.Response.Headers.WWWAuthenticate = "Bearer";
                        await Problems.Unauthorized(detail).ExecuteAsync(context.HttpContext);
                    },
                };
            });
        services.AddAuthorization();
        services.AddSingleton<AccessTokenValidator>();
        return services;
    }

    public static Guid UserId(this ClaimsPrincipal user) => Guid.Parse(user.FindFirstValue("sub")!);

    /// <summary>
    /// A token's <c>sub</c> names a user if it is a UUID other than the all-zero one, which the API refuses as a user id
    /// elsewhere (a member_id, a dev-token's user_id): a token for it would make a user nobody can add or name.
    /// </summary>
    public static bool IsUserId(string? sub, out Guid userId) => Guid.TryParse(sub, out userId) && userId != Guid.Empty;
}
