using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;

namespace RealtimeChat.Infrastructure;

/// <summary>
/// Turns every failure into RFC 9457 problem+json with a stable <c>code</c>: our own client errors, the
/// framework's binding errors (malformed JSON, wrong types, bad ids, oversized bodies), and — only for real
/// faults — a 500 that reveals nothing.
/// </summary>
public sealed class ChatExceptionHandler(ILogger<ChatExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        var (status, code, detail) = exception switch
        {
            ApiException api => (api.Status, api.Code, api.Message),
            BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } =>
                (413, "payload_too_large", "The request body is too large."),
            BadHttpRequestException { InnerException: InvalidEnumValueException invalid } =>
                (400, "invalid_enum_value", $"{FieldName(invalid.Path)}: {invalid.Message}"),
            BadHttpRequestException { InnerException: InvalidTextException invalid } =>
                (400, RequestText.Code, RequestText.Detail(FieldName(invalid.Path))),
            BadHttpRequestException { InnerException: JsonException } =>
                (400, "malformed_json", "The request body is not valid JSON of the expected shape."),
            BadHttpRequestException bad when bad.Message.Contains("Failed to bind parameter", StringComparison.Ordinal) =>
                (400, "invalid_parameter", bad.Message),
            BadHttpRequestException bad when bad.Message.Contains("Content-Type", StringComparison.OrdinalIgnoreCase) =>
                (415, "unsupported_media_type", bad.Message),
            BadHttpRequestException bad => (bad.StatusCode, Problems.DefaultCode(bad.StatusCode), bad.Message),
            InvalidDataException => (400, "malformed_request", "The request body could not be read."),
            OperationCanceledException when context.RequestAborted.IsCancellationRequested => (499, "client_closed", "The client went away."),
            _ => (500, "internal_error", "An unexpected error occurred."),
        };

        if (status >= 500)
        {
            logger.LogError(exception, "Unhandled error on {Method} {Path}", context.Request.Method, context.Request.Path);
        }
        else
        {
            logger.LogDebug("Request refused with {Status} {Code}: {Detail}", status, code, detail);
        }

        if (context.Response.HasStarted || status == 499)
        {
            return true;
        }
        await Problems.Create(status, code, detail).ExecuteAsync(context);
        return true;
    }

    // "$.role" → "role": the field as the client wrote it.
    private static string FieldName(string? path) => path is null ? "value" : path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : path;
}
