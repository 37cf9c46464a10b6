namespace RealtimeChat.Media;

public static class MediaSetup
{
    public static IServiceCollection AddMedia(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddSingleton<IMediaStore, LocalMediaStore>();
        return services;
    }

    public static IEndpointRouteBuilder MapMedia(this IEndpointRouteBuilder routes) => routes;
}

public sealed class LocalMediaStore(Microsoft.Extensions.Options.IOptions<Storage.StorageOptions> storage) : IMediaStore
{
    public Task DeleteAsync(string storageKey, CancellationToken cancellationToken)
    {
        File.Delete(Path.Combine(storage.Value.DataDirectory, "media", storageKey));
        return Task.CompletedTask;
    }
}
