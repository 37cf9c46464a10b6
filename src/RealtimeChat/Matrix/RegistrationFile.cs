using System.Security.Cryptography;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace RealtimeChat.Matrix;

/// <summary>The appservice registration file Synapse loads (<c>app_service_config_files</c>).</summary>
public static class RegistrationFile
{
    /// <param name="generatedTokens">Set when the tokens were not configured and had to be generated for this file.</param>
    public static string Build(MatrixOptions options, out bool generatedTokens)
    {
        var asToken = MatrixOptions.Secret(options.AsToken, options.AsTokenFile);
        var hsToken = MatrixOptions.Secret(options.HsToken, options.HsTokenFile);
        generatedTokens = asToken is null || hsToken is null;
        var server = System.Text.RegularExpressions.Regex.Escape(options.ServerName ?? "example.org");
        var registration = new Dictionary<string, object>
        {
            ["id"] = options.AppserviceId,
            ["url"] = (options.AppserviceUrl ?? new Uri("http://realtime-chat-service:8086")).ToString().TrimEnd('/'),
            ["as_token"] = asToken ?? NewToken(),
            ["hs_token"] = hsToken ?? NewToken(),
            ["sender_localpart"] = options.SenderLocalpart,
            ["rate_limited"] = false,
            ["receive_ephemeral"] = options.ReceiveEphemeral,
            // Synapse before 1.77 reads the unstable name.
            ["de.sorunome.msc2409.push_ephemeral"] = options.ReceiveEphemeral,
            ["namespaces"] = new Dictionary<string, object>
            {
                ["users"] = new[] { new Dictionary<string, object> { ["exclusive"] = true, ["regex"] = $"@{options.UserPrefix}.*:{server}" } },
                ["aliases"] = new[] { new Dictionary<string, object> { ["exclusive"] = true, ["regex"] = $"#{options.AliasPrefix}.*:{server}" } },
                ["rooms"] = Array.Empty<object>(),
            },
        };
        return new SerializerBuilder().WithNamingConvention(NullNamingConvention.Instance).Build().Serialize(registration);
    }

    private static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
}
