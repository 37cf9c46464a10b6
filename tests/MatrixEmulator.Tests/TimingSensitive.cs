using Xunit;

namespace MatrixEmulator.Tests;

/// <summary>
/// Tests that assert scaled back-off delays run alone: sharing the CPU with another test's start-up (JIT, Kestrel)
/// stalls the pusher for hundreds of milliseconds, longer than the scaled delays they measure.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimingSensitive
{
    public const string Name = "timing-sensitive";
}
