using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

public static class MatrixSetup
{
    /// <summary>The seed's environment variable names, mapped onto the <c>Matrix</c> section.</summary>
    private static readonly Dictionary<string, string> SeedEnvironment = new()
    {
        ["MATRIX_ENABLED"] = "Enabled",
        ["MATRIX_MODE"] = "Mode",
        ["MATRIX_HOMESERVER_URL"] = "HomeserverUrl",
        ["MATRIX_SERVER_NAME"] = "ServerName",
        ["MATRIX_ACCESS_TOKEN"] = "AccessToken",
        ["MATRIX_ACCESS_TOKEN_FILE"] = "AccessTokenFile",
        ["MATRIX_USER_ID"] = "UserId",
        ["MATRIX_PASSWORD"] = "Password",
        ["MATRIX_AS_TOKEN"] = "AsToken",
        ["MATRIX_AS_TOKEN_FILE"] = "AsTokenFile",
        ["MATRIX_HS_TOKEN"] = "HsToken",
        ["MATRIX_HS_TOKEN_FILE"] = "HsTokenFile",
        ["MATRIX_APPSERVICE_URL"] = "AppserviceUrl",
    };

    public static void AddSeedEnvironment(this IConfigurationManager configuration)
    {
        var mapped = SeedEnvironment
            .Select(pair => (Key: $"{MatrixOptions.Section}:{pair.Value}", Value: Environment.GetEnvironmentVariable(pair.Key)))
            .Where(pair => pair.Value is not null)
            .ToDictionary(pair => pair.Key, pair => pair.Value);
        if (mapped.Count > 0)
        {
            configuration.AddInMemoryCollection(mapped);
        }
    }

    public static IServiceCollection AddMatrix(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<MatrixOptions>().Bind(configuration.GetSection(MatrixOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        if (!configuration.GetSection(MatrixOptions.Section).GetValue<bool>(nameof(MatrixOptions.Enabled)))
        {
            return services;
        }

        services.AddSingleton<MatrixIds>();
        services.AddSingleton<MatrixCredentials>();
        services.AddHttpClient<MatrixApi>((provider, http) =>
            {
                var settings = provider.GetRequiredService<IOptions<MatrixOptions>>().Value;
                http.BaseAddress = settings.HomeserverUrl;
                http.Timeout = settings.RequestTimeout;
            })
            // The client lives in singletons (dispatcher, inbound handler): recycle connections so DNS changes are seen.
            .ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
            .SetHandlerLifetime(Timeout.InfiniteTimeSpan);
        services.AddSingleton<MatrixActionSender>();
        services.AddSingleton<HomeserverHealth>();
        services.AddSingleton<PortalLeases>();
        services.AddSingleton<Portals>();
        services.AddSingleton<MatrixDispatcher>();
        services.AddHostedService(provider => provider.GetRequiredService<MatrixDispatcher>());
        services.AddSingleton<RecordedEventIds>();
        services.AddHostedService<MatrixDeferredWorker>();
        services.AddSingleton<MatrixUsers>();
        services.AddSingleton<Conversations.IExternalMembers>(provider => provider.GetRequiredService<MatrixUsers>());
        services.AddSingleton<MatrixTypingRelay>();
        services.AddSingleton<Realtime.ITypingObserver>(provider => provider.GetRequiredService<MatrixTypingRelay>());
        services.AddHostedService(provider => provider.GetRequiredService<MatrixTypingRelay>());
        services.AddSingleton<MatrixInbound>();
        services.AddSingleton<AppserviceTransactionGaps>();
        services.AddSingleton<RoomTimelines>();
        services.AddHostedService(provider => provider.GetRequiredService<RoomTimelines>());
        services.AddSingleton<OutboxWakeups>();
        services.AddSingleton<MatrixEvents>();
        services.AddSingleton<ITransactionalEventSink>(provider => provider.GetRequiredService<MatrixEvents>());
        services.AddSingleton<Messages.IMessageDelivery, MatrixDeliveryStates>();
        services.AddSingleton<MatrixOutbox>();
        services.AddSingleton<ITransactionalEventSink>(provider => provider.GetRequiredService<MatrixOutbox>());
        services.AddSingleton<IChatEventPublisher>(provider => provider.GetRequiredService<MatrixOutbox>());
        if (configuration.GetSection(MatrixOptions.Section).GetValue<MatrixMode>(nameof(MatrixOptions.Mode)) == MatrixMode.Client)
        {
            services.AddHostedService<MatrixSyncWorker>();
        }
        services.AddHealthChecks().AddCheck<HomeserverHealthCheck>("matrix", failureStatus: HealthStatus.Degraded, tags: ["ready"]);
        return services;
    }
}

/// <summary>The chat works without the homeserver, so an unreachable one makes readiness degraded, never down.</summary>
public sealed class HomeserverHealthCheck(IHttpClientFactory httpClients, IOptions<MatrixOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        return await HomeserverHealth.VersionsStatusAsync(httpClients, options.Value.HomeserverUrl, cancellationToken) switch
        {
            null => HealthCheckResult.Degraded("homeserver unreachable; Matrix delivery is delayed"),
            var status when (int)status is >= 200 and < 300 => HealthCheckResult.Healthy("homeserver reachable"),
            var status => HealthCheckResult.Degraded($"homeserver answered {(int)status}; Matrix delivery is delayed"),
        };
    }
}
