namespace RealtimeChat.Tests.Synapse;

/// <summary>
/// A test against a real Synapse. Without one (no synapse.sh found) it is reported as skipped with the reason, never as
/// passed; with <c>CHAT_TEST_SYNAPSE=required</c> (what scripts/test.sh sets when Synapse is present) it runs and fails.
/// </summary>
public sealed class SynapseFactAttribute : FactAttribute
{
    public SynapseFactAttribute()
    {
        if (SynapseHomeserver.Locate() is null && !SynapseHomeserver.Required)
        {
            Skip = "real-Synapse suite NOT RUN: no synapse.sh (set CHAT_TEST_SYNAPSE_SH or provide ../shared/synapse).";
        }
    }
}

/// <summary>The real-Synapse tests run one at a time: each starts its own Synapse (a Python process of its own) and
/// some time outages, so running them side by side on a small machine would only measure the machine.</summary>
[CollectionDefinition(Name)]
public sealed class SynapseCollection
{
    public const string Name = "Real Synapse";
}
