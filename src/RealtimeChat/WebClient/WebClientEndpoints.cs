using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Options;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.WebClient;

public sealed record DevelopmentTokenRequest(Guid? UserId, string? DisplayName);

public sealed record DevelopmentTokenResponse(string AccessToken, Guid UserId, string? DisplayName, DateTimeOffset ExpiresAt);

/// <summary>What the page needs to know before anyone signs in.</summary>
public sealed record WebClientConfig(bool DevelopmentSignIn);

/// <summary>
/// The browser client at <c>/</c> and what it needs from the server. Its files are embedded in the assembly, so the
/// service serves them from any working directory (tests, <c>dotnet RealtimeChat.dll</c> in a container).
/// </summary>
public static class WebClientEndpoints
{
    private const int MaxDisplayNameLength = 64;
    private static readonly TimeSpan DevelopmentTokenLifetime = TimeSpan.FromHours(12);

    // The page loads only its own files and talks only to this origin.
    private const string ContentSecurityPolicy =
        "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; img-src 'self' blob: data:; " +
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

    public static IApplicationBuilder UseWebClient(this IApplicationBuilder app)
    {
        LogAddressOnStart(app.ApplicationServices);
        var files = new EmbeddedFileProvider(typeof(WebClientEndpoints).Assembly, "webclient");
        app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files });
        return app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = files,
            OnPrepareResponse = context =>
            {
                var headers = context.Context.Response.Headers;
                headers.ContentSecurityPolicy = ContentSecurityPolicy;
                headers.XContentTypeOptions = "nosniff";
                // The files change with every release of the service and carry no version in their names.
                headers.CacheControl = "no-cache";
            },
        });
    }

    /// <summary>
    /// Kestrel logs the address it binds (0.0.0.0 by default), which a browser cannot open; a newcomer wants a link.
    /// </summary>
    private static void LogAddressOnStart(IServiceProvider services)
    {
        var lifetime = services.GetRequiredService<IHostApplicationLifetime>();
        lifetime.ApplicationStarted.Register(() =>
        {
            var addresses = services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
                .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()?.Addresses ?? [];
            var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(WebClientEndpoints));
            foreach (var address in addresses)
            {
                var uri = new UriBuilder(address);
                if (uri.Host is "0.0.0.0" or "[::]" or "::" or "+" or "*")
                {
                    uri.Host = "localhost";
                }
                logger.LogInformation("Web client: {Url}", uri.Uri);
            }
        });
    }

    public static IEndpointRouteBuilder MapWebClient(this IEndpointRouteBuilder routes)
    {
        // Bound here without validation: invalid Auth settings must still fail at start, as the options' own check says,
        // not while the app (or a command such as `registration`) is being built.
        var auth = routes.ServiceProvider.GetRequiredService<IConfiguration>().GetSection(AuthOptions.Section).Get<AuthOptions>() ?? new AuthOptions();
        var developmentSignIn = SigningKeys.IsGeneratedDevelopmentKey(auth);
        var group = routes.MapGroup("/api/v1/web").WithTags("Web client");

        group.MapGet("/config", () => TypedResults.Ok(new WebClientConfig(developmentSignIn)))
            .WithSummary("Whether the page may offer development sign-in");

        // Anyone who can reach the service could mint a token for any user here, which is what a development key
        // is for and never acceptable with a real key or identity provider: then the route does not exist at all.
        if (developmentSignIn)
        {
            routes.ServiceProvider.GetRequiredService<IHostApplicationLifetime>().ApplicationStarted.Register(() =>
                routes.ServiceProvider.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(WebClientEndpoints)).LogWarning(
                    "Development sign-in is open (POST /api/v1/web/dev-token): anyone who can reach this service can act as any user. " +
                    "Configure Auth:SigningKeyFile or Auth:Authority before exposing it."));
            group.MapPost("/dev-token", (DevelopmentTokenRequest request, IOptions<AuthOptions> options, IOptions<StorageOptions> storage, TimeProvider clock) =>
                {
                    if (request.UserId is not { } userId || userId == Guid.Empty)
                    {
                        throw ApiException.BadRequest("user_id_required", "user_id must be a UUID.");
                    }
                    var name = string.IsNullOrWhiteSpace(request.DisplayName) ? null : request.DisplayName.Trim();
                    if (name is { Length: > MaxDisplayNameLength })
                    {
                        throw ApiException.BadRequest("display_name_too_long", $"display_name is at most {MaxDisplayNameLength} characters.");
                    }
                    var key = SigningKeys.Resolve(options.Value, storage.Value, logger: null)!;
                    var token = DevelopmentTokens.Mint(key, userId, DevelopmentTokenLifetime, options.Value, name);
                    return TypedResults.Ok(new DevelopmentTokenResponse(token, userId, name, clock.GetUtcNow().Add(DevelopmentTokenLifetime)));
                })
                .WithSummary("A development token for any user (only while the service signs with its generated development key)");
        }
        return routes;
    }
}
