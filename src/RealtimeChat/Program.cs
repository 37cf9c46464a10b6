using System.CommandLine;
using Microsoft.Extensions.Options;
using RealtimeChat;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;
using RealtimeChat.Matrix;
using RealtimeChat.Storage;

// Unmatched arguments (e.g. --urls, --Database:Provider=Postgres) go on to the host's configuration.
var serve = new RootCommand("realtime-chat-service: chat REST API, WebSocket events and the Matrix bridge.")
{
    TreatUnmatchedTokensAsErrors = false,
};
serve.SetAction(async (parse, _) => await StartupErrors.RunAsync(() => ChatApp.RunAsync([.. parse.UnmatchedTokens])));

var migrate = new Command("migrate", "Apply database migrations and exit (for a separate deploy step).") { TreatUnmatchedTokensAsErrors = false };
migrate.SetAction(async (parse, _) => await StartupErrors.RunAsync(() =>
{
    var app = ChatApp.Build([.. parse.UnmatchedTokens]);
    app.Services.GetRequiredService<DatabaseMigrator>().Migrate();
    Console.Error.WriteLine("Database is up to date.");
    return Task.CompletedTask;
}));

var userOption = new Option<Guid>("--user") { Description = "The user id (sub claim).", Required = true };
var hoursOption = new Option<double>("--hours") { Description = "Lifetime in hours.", DefaultValueFactory = _ => 24 };
var nameOption = new Option<string?>("--name") { Description = "Optional display name claim." };
var token = new Command("token", "Print a development access token signed with the configured HS256 key.")
{
    userOption, hoursOption, nameOption,
};
token.TreatUnmatchedTokensAsErrors = false;
token.SetAction(async (parse, _) => await StartupErrors.RunAsync(() =>
{
    var app = ChatApp.Build([.. parse.UnmatchedTokens]);
    var auth = app.Services.GetRequiredService<IOptions<AuthOptions>>().Value;
    var key = SigningKeys.Resolve(auth, app.Services.GetRequiredService<IOptions<StorageOptions>>().Value, logger: null);
    if (key is null)
    {
        Console.Error.WriteLine("Auth:Authority is configured: tokens come from that identity provider, not from this command.");
        return Task.FromResult(1);
    }
    Console.WriteLine(DevelopmentTokens.Mint(key, parse.GetValue(userOption), TimeSpan.FromHours(parse.GetValue(hoursOption)), auth, parse.GetValue(nameOption)));
    return Task.FromResult(0);
}));

serve.Subcommands.Add(migrate);
serve.Subcommands.Add(MatrixCommands.Registration());
serve.Subcommands.Add(MatrixCommands.Matrix());
serve.Subcommands.Add(token);
return await serve.Parse(args).InvokeAsync();
