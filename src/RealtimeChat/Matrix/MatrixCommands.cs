using System.CommandLine;
using Dapper;
using RealtimeChat.Infrastructure;
using RealtimeChat.Storage;

namespace RealtimeChat.Matrix;

/// <summary>The operator's commands for the bridge: <c>registration</c> and <c>matrix retry</c>.</summary>
public static class MatrixCommands
{
    public static Command Registration()
    {
        var registration = new Command("registration", "Print the appservice registration YAML to give Synapse (from the Matrix settings).")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        registration.SetAction(async (parse, _) => await StartupErrors.RunAsync(() =>
        {
            var app = ChatApp.Build([.. parse.UnmatchedTokens]);
            // Read without validation: the point may be to generate the tokens that validation would ask for.
            var settings = app.Configuration.GetSection(MatrixOptions.Section).Get<MatrixOptions>() ?? new MatrixOptions();
            var yaml = RegistrationFile.Build(settings, out var generated);
            Console.Write(yaml);
            if (generated)
            {
                Console.Error.WriteLine("Matrix:AsToken / Matrix:HsToken are not configured: the tokens above were generated now. " +
                    "Configure the service with the same values (MATRIX_AS_TOKEN / MATRIX_HS_TOKEN, or Matrix__AsToken / Matrix__HsToken).");
            }
            return Task.CompletedTask;
        }));
        return registration;
    }

    public static Command Matrix()
    {
        var conversation = new Option<Guid?>("--conversation") { Description = "Only this conversation's parked actions." };
        var retry = new Command("retry", "Send parked (failed) Matrix actions again, in their order, from the next dispatch on.") { conversation };
        retry.TreatUnmatchedTokensAsErrors = false;
        retry.SetAction(async (parse, cancellationToken) => await StartupErrors.RunAsync(async () =>
        {
            var app = ChatApp.Build([.. parse.UnmatchedTokens]);
            var database = app.Services.GetRequiredService<ChatDatabase>();
            var time = app.Services.GetRequiredService<TimeProvider>();
            var conversationId = parse.GetValue(conversation);
            await using var connection = await database.OpenAsync(cancellationToken);
            var count = await connection.ExecuteAsync(
                $"""
                UPDATE matrix_outbox
                   SET status = 'pending', attempts = 0, next_attempt_at = @now, last_error = NULL
                 WHERE status = 'failed'{(conversationId is null ? "" : " AND conversation_id = @conversationId")}
                """,
                new { now = time.UtcNowMicros(), conversationId });
            Console.WriteLine($"{count} parked Matrix action(s) queued again{(conversationId is null ? "" : $" for conversation {conversationId}")}.");
        }));
        return new Command("matrix", "Operate the Matrix bridge.") { retry };
    }
}
