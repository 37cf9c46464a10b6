using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Prometheus;
using RealtimeChat.Conversations;
using RealtimeChat.Identity;
using RealtimeChat.Matrix;
using RealtimeChat.Infrastructure;
using RealtimeChat.Media;
using RealtimeChat.Messages;
using RealtimeChat.Realtime;
using RealtimeChat.Storage;
using RealtimeChat.WebClient;
using Scalar.AspNetCore;

namespace RealtimeChat;

/// <summary>Builds the service; <c>Program</c> and the tests both start it through here.</summary>
public static class ChatApp
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        builder.WebHost.UseUrls(builder.Configuration["urls"] ?? "http://0.0.0.0:8086");
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.AddServerHeader = false);
        builder.Configuration.AddSeedEnvironment();
        builder.AddChatLoggingDefaults();
        configure?.Invoke(builder);
        AddServices(builder.Services, builder.Configuration);
        var app = builder.Build();
        MapEndpoints(app);
        return app;
    }

    /// <summary>Migrates (unless disabled) and checks the content keys against stored data; run before serving.</summary>
    public static async Task InitializeAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        var services = app.Services;
        // The JWT settings are otherwise first built on the first request: a bad key file must stop the start instead.
        services.GetRequiredService<IOptionsMonitor<Microsoft.AspNetCore.Authentication.JwtBearer.JwtBearerOptions>>().Get(
            Microsoft.AspNetCore.Authentication.JwtBearer.JwtBearerDefaults.AuthenticationScheme);
        if (services.GetRequiredService<IOptions<DatabaseOptions>>().Value.MigrateOnStartup)
        {
            services.GetRequiredService<DatabaseMigrator>().Migrate();
        }
        await services.GetRequiredService<ContentCipher>().VerifyAgainstStoredDataAsync(
            services.GetRequiredService<ChatDatabase>(), services.GetRequiredService<TimeProvider>(), cancellationToken);
    }

    public static async Task RunAsync(string[] args)
    {
        var app = Build(args);
        await InitializeAsync(app);
        await app.RunAsync();
    }

    private static void AddServices(IServiceCollection services, IConfiguration configuration)
    {
        DapperTypeHandlers.Register();
        services.AddOptions<StorageOptions>().Bind(configuration.GetSection(StorageOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<DatabaseOptions>().Bind(configuration.GetSection(DatabaseOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<EncryptionOptions>().Bind(configuration.GetSection(EncryptionOptions.Section));
        services.AddOptions<ConversationOptions>().Bind(configuration.GetSection(ConversationOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<MessageOptions>().Bind(configuration.GetSection(MessageOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<RealtimeOptions>().Bind(configuration.GetSection(RealtimeOptions.Section)).ValidateDataAnnotations().ValidateOnStart();

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<ChatDatabase>();
        services.AddSingleton<DatabaseMigrator>();
        services.AddSingleton(provider => ContentCipher.Create(
            provider.GetRequiredService<IOptions<EncryptionOptions>>().Value,
            provider.GetRequiredService<IOptions<StorageOptions>>().Value,
            provider.GetRequiredService<ILoggerFactory>().CreateLogger<ContentCipher>()));

        services.AddSingleton<RealtimeHub>();
        services.AddSingleton<IChatEventPublisher>(provider => provider.GetRequiredService<RealtimeHub>());
        services.AddSingleton<ChatEventPipeline>();
        services.AddSingleton<EventReplayer>();
        services.AddSingleton<RealtimeSession>();
        services.AddSingleton<TypingThrottle>();
        services.AddSingleton<MessageRenderer>();
        services.AddSingleton<UserProfiles>();
        services.AddSingleton<ConversationService>();
        services.AddSingleton<MessageWriter>();
        services.AddHostedService(provider => provider.GetRequiredService<MessageWriter>());
        services.AddSingleton<MessageService>();
        services.AddMedia(configuration);
        services.AddMatrix(configuration);
        // After the bridge, which provides its own when it is enabled.
        services.TryAddSingleton<IMessageDelivery, NoMessageDelivery>();
        services.TryAddSingleton<IExternalMembers, NoExternalMembers>();

        services.AddChatAuthentication(configuration);
        services.AddChatRateLimits(configuration);

        services.Configure<JsonOptions>(json => ChatJson.ConfigureApi(json.SerializerOptions));
        services.Configure<RouteHandlerOptions>(routes => routes.ThrowOnBadRequest = true);
        services.AddProblemDetails(problems => problems.CustomizeProblemDetails = context =>
        {
            context.ProblemDetails.Extensions.TryAdd("code", Problems.DefaultCode(context.ProblemDetails.Status ?? 500));
            context.ProblemDetails.Extensions["request_id"] = context.HttpContext.TraceIdentifier;
        });
        services.AddExceptionHandler<ChatExceptionHandler>();
        services.AddHealthChecks().AddCheck<DatabaseHealthCheck>("database", tags: ["ready"]);
        services.AddOpenApi(openApi => openApi.AddEnumNames().AddStringTypes());
    }

    private static void MapEndpoints(WebApplication app)
    {
        app.UseMiddleware<RequestIdMiddleware>();
        app.UseRequestLogging(app.Configuration);
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseWebClient();
        app.UseHttpMetrics();
        app.UseWebSockets();
        app.UseAuthentication();
        app.UseAuthorization();
        // Before anything that may touch the database: a refused request costs as little as possible.
        app.UseChatRateLimits();
        app.Use(async (context, next) =>
        {
            if (context.User.Identity?.IsAuthenticated == true)
            {
                await context.RequestServices.GetRequiredService<UserProfiles>().ObserveAsync(context.User, context.RequestAborted);
            }
            await next(context);
        });

        app.UseRequestCharsets();

        // JSON endpoints take small bodies; media uploads set their own limit.
        app.Use((context, next) =>
        {
            if (context.Request.Path.StartsWithSegments("/api") && !context.Request.HasFormContentType)
            {
                var limit = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>();
                if (limit is { IsReadOnly: false })
                {
                    limit.MaxRequestBodySize = 64 * 1024;
                }
            }
            return next(context);
        });

        app.MapConversations();
        app.MapMessages();
        app.MapMedia();
        app.MapRealtime();
        app.MapMatrix();
        app.MapWebClient();

        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = check => check.Tags.Contains("ready") });
        ChatMetrics.ConfigureMeterExport();
        app.MapMetrics("/metrics");
        app.MapOpenApi();
        app.MapScalarApiReference("/docs");
    }
}
