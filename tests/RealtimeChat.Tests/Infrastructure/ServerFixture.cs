namespace RealtimeChat.Tests.Infrastructure;

/// <summary>One server per test class; tests isolate themselves by using fresh user ids.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public ChatServer Server { get; private set; } = null!;

    public async Task InitializeAsync() => Server = await ChatServer.StartAsync();

    public async Task DisposeAsync() => await Server.DisposeAsync();
}
