using System.Net;
using System.Reflection;
using System.Security.Cryptography;
using RealtimeChat.Tests.Infrastructure;
using YamlDotNet.RepresentationModel;

namespace RealtimeChat.Tests.Deployment;

/// <summary>
/// What can be checked of deploy/ without a container runtime or a cluster: the YAML parses, the manifests agree with
/// each other and with the service's endpoints, and the settings they set are ones the service reads, shown by starting
/// the published service as Kubernetes would: a process whose environment is the ConfigMap and the Deployment's env.
/// (scripts/docker-publish-check.sh runs the Dockerfile's publish step.)
/// </summary>
public sealed class DeploymentFileTests
{
    private static readonly string Deploy = Path.Combine(FindRoot(), "deploy");

    [Fact]
    public void Every_yaml_file_parses()
    {
        var files = Directory.GetFiles(Deploy, "*.yaml", SearchOption.AllDirectories);
        Assert.True(files.Length >= 7, string.Join(", ", files));
        foreach (var file in files)
        {
            var documents = Load(file);
            Assert.NotEmpty(documents);
            Assert.All(documents, document => Assert.IsType<YamlMappingNode>(document.RootNode));
        }
    }

    [Fact]
    public void The_kustomization_lists_existing_files_and_the_manifests_agree()
    {
        var kustomization = Root(Path.Combine(Deploy, "k8s", "kustomization.yaml"));
        var resources = Sequence(kustomization, "resources").Select(r => r.ToString()).ToList();
        Assert.All(resources, r => Assert.True(File.Exists(Path.Combine(Deploy, "k8s", r)), r));

        var manifests = resources.SelectMany(r => Load(Path.Combine(Deploy, "k8s", r))).Select(d => (YamlMappingNode)d.RootNode).ToList();
        var deployment = manifests.Single(m => Scalar(m, "kind") == "Deployment");
        var configMap = manifests.Single(m => Scalar(m, "kind") == "ConfigMap");
        var service = manifests.Single(m => Scalar(m, "kind") == "Service");
        var job = manifests.Single(m => Scalar(m, "kind") == "Job");

        var spec = Map(deployment, "spec");
        Assert.Equal("1", Scalar(spec, "replicas"));
        var container = (YamlMappingNode)Sequence(Map(Map(spec, "template"), "spec"), "containers").Single();
        Assert.Equal("/health/live", Scalar(Map(Map(container, "livenessProbe"), "httpGet"), "path"));
        Assert.Equal("/health/ready", Scalar(Map(Map(container, "readinessProbe"), "httpGet"), "path"));
        Assert.NotNull(Scalar(Map(Map(container, "resources"), "requests"), "memory"));
        var configName = Scalar(Map(configMap, "metadata"), "name");
        Assert.Equal("realtime-chat-service-config", configName);
        Assert.Contains(Sequence(container, "envFrom"), e => Scalar(Map((YamlMappingNode)e, "configMapRef"), "name") == configName);

        Assert.Equal(Scalar(Map(Map(Map(spec, "template"), "metadata"), "labels"), "app"), Scalar(Map(Map(service, "spec"), "selector"), "app"));
        var migrate = (YamlMappingNode)Sequence(Map(Map(Map(job, "spec"), "template"), "spec"), "containers").Single();
        Assert.Equal(["migrate"], Sequence(migrate, "args").Select(a => a.ToString()));
        Assert.Equal("false", Scalar(Map(configMap, "data"), "Database__MigrateOnStartup"));
    }

    [Fact]
    public void Every_setting_in_the_manifests_and_compose_file_is_one_the_service_reads()
    {
        var names = new List<string>();
        names.AddRange(ConfigMapData().Keys);
        names.AddRange(DeploymentEnvironment().Keys);
        var compose = Root(Path.Combine(Deploy, "compose.yaml"));
        foreach (var service in new[] { "realtime-chat-service", "registration" })
        {
            names.AddRange(Map(Map(Map(compose, "services"), service), "environment").Children.Keys.Select(k => k.ToString()));
        }
        var unknown = names.Distinct().Where(name => !ServiceReads(name)).ToList();
        Assert.True(unknown.Count == 0, "Settings the service does not read: " + string.Join(", ", unknown));
    }

    [Theory]
    [InlineData("false", "Healthy")]
    [InlineData("true", "Degraded")] // as the seed patches it; no homeserver answers here
    public async Task The_published_service_runs_migrate_and_serves_with_the_configmap_as_its_environment(string matrixEnabled, string readiness)
    {
        var directory = Directory.CreateTempSubdirectory("chat-deploy-").FullName;
        var (database, drop) = await TestDatabase.CreateAsync(directory);
        try
        {
            var secrets = Directory.CreateDirectory(Path.Combine(directory, "secrets")).FullName;
            await File.WriteAllTextAsync(Path.Combine(secrets, "jwt-signing-key"), Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)));
            await File.WriteAllTextAsync(Path.Combine(secrets, "content-keys.json"),
                System.Text.Json.JsonSerializer.Serialize(new
                {
                    active_key_id = "k1",
                    keys = new Dictionary<string, string> { ["k1"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)) },
                }));
            await File.WriteAllTextAsync(Path.Combine(secrets, "MATRIX_AS_TOKEN"), "as-token-for-the-deployment-test");
            await File.WriteAllTextAsync(Path.Combine(secrets, "MATRIX_HS_TOKEN"), "hs-token-for-the-deployment-test");

            var environment = new Dictionary<string, string>();
            foreach (var (name, value) in ConfigMapData().Concat(DeploymentEnvironment()))
            {
                // Mounted Secrets are files in a directory here; /data is the pod's emptyDir.
                environment[name] = value == "/data" ? directory : value.Replace("/secrets/app/", secrets + "/").Replace("/secrets/matrix/", secrets + "/");
            }
            environment["MATRIX_ENABLED"] = matrixEnabled;
            environment["MATRIX_HOMESERVER_URL"] = "http://127.0.0.1:9"; // discard port: nothing listens
            // Values that come from secretKeyRef, and the database of this test run (the ConfigMap says PostgreSQL).
            environment["Database__Provider"] = database["Database:Provider"]!;
            environment["Database__ConnectionString"] = database.GetValueOrDefault("Database:ConnectionString") ?? $"Data Source={directory}/chat.db";
            environment["Media__S3__AccessKey"] = "test";
            environment["Media__S3__SecretKey"] = "test";

            // The migration Job first: the ConfigMap turns migrations at start-up off.
            var (migrated, migrateOutput) = await RunToEndAsync(["migrate"], environment);
            Assert.True(migrated == 0, migrateOutput);

            // Port 0, and the address from the service's own log: a port found free beforehand could be taken by another
            // test's host before the service binds it, and that host would answer the readiness probe.
            environment["urls"] = "http://127.0.0.1:0";
            await using var service = ServiceProcess.Start([], AppContext.BaseDirectory, environment: environment);
            using var http = new HttpClient { BaseAddress = await service.WaitListeningAsync(), Timeout = TimeSpan.FromSeconds(5) };
            var deadline = DateTime.UtcNow.AddSeconds(60);
            string? status = null;
            while (DateTime.UtcNow < deadline && !service.Process.HasExited)
            {
                try
                {
                    status = await http.GetStringAsync("/health/ready");
                    if (status == readiness)
                    {
                        break;
                    }
                }
                catch (HttpRequestException)
                {
                }
                await Task.Delay(200);
            }
            Assert.True(status == readiness, $"readiness {status ?? "(no answer)"}, expected {readiness}\n{string.Join('\n', service.Lines)}");
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health/live")).StatusCode);
            // A configured signing key: the page asks for a pasted token, and nobody can mint one.
            Assert.Equal(HttpStatusCode.NotFound, (await http.PostAsync("/api/v1/web/dev-token", null)).StatusCode);
        }
        finally
        {
            await drop();
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task The_compose_registration_job_prints_a_registration_with_its_tokens()
    {
        var compose = Root(Path.Combine(Deploy, "compose.yaml"));
        var environment = Map(Map(Map(compose, "services"), "registration"), "environment").Children
            .ToDictionary(e => e.Key.ToString(), e => Interpolate(e.Value.ToString()));
        var (exit, output) = await RunToEndAsync(["registration"], environment, standardOutputOnly: true);
        Assert.True(exit == 0, output);
        var stream = new YamlStream();
        stream.Load(new StringReader(output));
        var registration = (YamlMappingNode)stream.Documents.Single().RootNode;
        Assert.Equal(environment["MATRIX_AS_TOKEN"], Scalar(registration, "as_token"));
        Assert.Equal(environment["MATRIX_HS_TOKEN"], Scalar(registration, "hs_token"));
        Assert.Equal(environment["MATRIX_APPSERVICE_URL"], Scalar(registration, "url"));
    }

    /// <summary>Compose's <c>${NAME:-default}</c> and <c>${NAME:?error}</c>, with made-up values for the required ones.</summary>
    private static string Interpolate(string value) =>
        System.Text.RegularExpressions.Regex.Replace(value, @"\$\{(\w+)(:-([^}]*)|:\?[^}]*)?\}", m =>
            m.Groups[3].Success ? m.Groups[3].Value : $"{m.Groups[1].Value.ToLowerInvariant()}-from-dot-env");

    /// <summary>A name as the service reads it: a configuration key bound to an options property, or a seed MATRIX_* name.</summary>
    private static bool ServiceReads(string name)
    {
        if (name.StartsWith("MATRIX_", StringComparison.Ordinal))
        {
            // The seed's names map onto the Matrix section (MatrixSetup.AddSeedEnvironment): MATRIX_AS_TOKEN_FILE → AsTokenFile.
            var property = string.Concat(name["MATRIX_".Length..].Split('_').Select(part => part[0] + part[1..].ToLowerInvariant()));
            return Bindable("Matrix:" + property);
        }
        var key = name.Replace("__", ":");
        // Read by ASP.NET Core itself rather than by an options class of ours.
        if (key.Equals("urls", StringComparison.OrdinalIgnoreCase) || key.StartsWith("Logging:", StringComparison.Ordinal))
        {
            return true;
        }
        return Bindable(key);
    }

    private static bool Bindable(string key)
    {
        var parts = key.Split(':');
        var options = typeof(ChatApp).Assembly.GetTypes().FirstOrDefault(t =>
            t.GetField("Section", BindingFlags.Public | BindingFlags.Static) is { IsLiteral: true } field && (string?)field.GetValue(null) == parts[0]);
        var type = options;
        foreach (var part in parts.Skip(1))
        {
            if (type is null)
            {
                return false;
            }
            // A dictionary (Encryption:Keys:<id>) takes any key below it.
            if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>))
            {
                return true;
            }
            var property = type.GetProperty(part, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is not { CanWrite: true } && property?.PropertyType.IsClass != true)
            {
                return false;
            }
            type = property.PropertyType;
        }
        return options is not null && parts.Length > 1;
    }

    private static Dictionary<string, string> ConfigMapData()
    {
        var configMap = (YamlMappingNode)Load(Path.Combine(Deploy, "k8s", "configmap.yaml")).Single().RootNode;
        return Map(configMap, "data").Children.ToDictionary(e => e.Key.ToString(), e => e.Value.ToString());
    }

    /// <summary>The Deployment's own env: literal values as they are, secretKeyRef values as empty strings.</summary>
    private static Dictionary<string, string> DeploymentEnvironment()
    {
        var deployment = (YamlMappingNode)Load(Path.Combine(Deploy, "k8s", "deployment.yaml")).Single().RootNode;
        var container = (YamlMappingNode)Sequence(Map(Map(Map(deployment, "spec"), "template"), "spec"), "containers").Single();
        return Sequence(container, "env").Cast<YamlMappingNode>()
            .ToDictionary(e => Scalar(e, "name")!, e => Scalar(e, "value") ?? "");
    }

    /// <summary>The service with these arguments and only what a container would have in its environment, run to its end.</summary>
    private static async Task<(int Exit, string Output)> RunToEndAsync(string[] args, Dictionary<string, string> environment, bool standardOutputOnly = false)
    {
        await using var process = ServiceProcess.Start(args, AppContext.BaseDirectory, environment: environment);
        var exit = await process.WaitForExitAsync(TimeSpan.FromSeconds(60));
        return (exit, string.Join('\n', standardOutputOnly ? process.OutputLines : process.Lines));
    }

    private static IList<YamlDocument> Load(string path)
    {
        var stream = new YamlStream();
        using var reader = File.OpenText(path);
        stream.Load(reader);
        return stream.Documents;
    }

    private static YamlMappingNode Root(string path) => (YamlMappingNode)Load(path).Single().RootNode;

    private static YamlMappingNode Map(YamlMappingNode node, string key) => (YamlMappingNode)node.Children[new YamlScalarNode(key)];

    private static IEnumerable<YamlNode> Sequence(YamlMappingNode node, string key) => ((YamlSequenceNode)node.Children[new YamlScalarNode(key)]).Children;

    private static string? Scalar(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var value) && value is YamlScalarNode scalar ? scalar.Value : null;

    private static string FindRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "realtime-chat-service.slnx")))
        {
            directory = directory.Parent;
        }
        return directory?.FullName ?? throw new InvalidOperationException("The repository root is not above the test's directory.");
    }
}
