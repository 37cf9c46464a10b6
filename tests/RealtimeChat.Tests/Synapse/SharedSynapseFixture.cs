namespace RealtimeChat.Tests.Synapse;

/// <summary>One Synapse and one service for a class whose tests do not disturb each other (fresh users and
/// conversations per test). Started on first use, so a skipped class never starts anything.</summary>
public abstract class SharedSynapseFixture(string mode) : IAsyncLifetime
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private SynapseBridge? _bridge;

    public async Task<SynapseBridge> BridgeAsync()
    {
        await _gate.WaitAsync();
        try
        {
            return _bridge ??= await SynapseBridge.StartAsync(mode);
        }
        finally
        {
            _gate.Release();
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_bridge is not null)
        {
            await _bridge.DisposeAsync();
        }
    }
}

public sealed class AppserviceSynapseFixture() : SharedSynapseFixture("Appservice");

public sealed class ClientSynapseFixture() : SharedSynapseFixture("Client");
