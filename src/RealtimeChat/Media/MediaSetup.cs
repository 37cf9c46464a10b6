using Microsoft.Extensions.Options;

namespace RealtimeChat.Media;

public static class MediaSetup
{
    public static IServiceCollection AddMedia(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<MediaOptions>().Bind(configuration.GetSection(MediaOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<MediaCipher>();
        services.AddSingleton<IMediaStore>(provider =>
            provider.GetRequiredService<IOptions<MediaOptions>>().Value.Provider == MediaProvider.S3
                ? ActivatorUtilities.CreateInstance<S3MediaStore>(provider)
                : ActivatorUtilities.CreateInstance<LocalMediaStore>(provider));
        services.AddSingleton<MediaService>();
        services.AddSingleton<MediaReader>();
        services.AddHostedService<MediaSweeper>();
        return services;
    }
}
