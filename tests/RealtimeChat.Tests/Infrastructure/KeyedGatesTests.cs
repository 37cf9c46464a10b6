using RealtimeChat.Infrastructure;

namespace RealtimeChat.Tests.Infrastructure;

/// <summary>The per-room gate of the inbound bridge: one at a time per key, keys in parallel, nothing kept afterwards.</summary>
public sealed class KeyedGatesTests
{
    [Fact]
    public async Task One_holder_per_key_keys_run_in_parallel_and_no_gate_outlives_its_work()
    {
        var gates = new KeyedGates<string>(StringComparer.Ordinal);
        var inside = new int[8];
        var mostInsideOneKey = 0;
        var keysInside = 0;
        var mostKeysInside = 0;
        await Task.WhenAll(Enumerable.Range(0, 8 * 40).Select(i => Task.Run(async () =>
        {
            var key = i % 8;
            using (await gates.EnterAsync($"!room{key}:hs", CancellationToken.None))
            {
                var here = Interlocked.Increment(ref inside[key]);
                InterlockedMax(ref mostInsideOneKey, here);
                InterlockedMax(ref mostKeysInside, Interlocked.Increment(ref keysInside));
                await Task.Delay(1);
                Interlocked.Decrement(ref keysInside);
                Interlocked.Decrement(ref inside[key]);
            }
        })));

        Assert.Equal(1, mostInsideOneKey);
        Assert.True(mostKeysInside > 1, "different rooms should not wait for each other");
        Assert.Equal(0, gates.Count);
    }

    [Fact]
    public async Task A_waiter_that_gives_up_leaves_the_gate_working()
    {
        var gates = new KeyedGates<string>(StringComparer.Ordinal);
        var holder = await gates.EnterAsync("!a:hs", CancellationToken.None);
        using var giveUp = new CancellationTokenSource();
        var impatient = gates.EnterAsync("!a:hs", giveUp.Token);
        var patient = gates.EnterAsync("!a:hs", CancellationToken.None);
        giveUp.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => impatient);
        Assert.False(patient.IsCompleted);
        Assert.Equal(1, gates.Count);

        holder.Dispose();
        holder.Dispose(); // A second end of the same turn does not let anyone else in.
        var next = await patient.WaitAsync(TimeSpan.FromSeconds(5));
        var third = gates.EnterAsync("!a:hs", CancellationToken.None);
        await Task.Delay(50);
        Assert.False(third.IsCompleted);

        next.Dispose();
        (await third.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, gates.Count);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        for (var seen = Volatile.Read(ref target); value > seen; seen = Volatile.Read(ref target))
        {
            if (Interlocked.CompareExchange(ref target, value, seen) == seen)
            {
                return;
            }
        }
    }
}
