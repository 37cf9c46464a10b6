using Microsoft.AspNetCore.Http.HttpResults;

namespace RealtimeChat.Infrastructure;

/// <summary>A client mistake or refusal, carrying the stable <c>code</c> clients branch on.</summary>
public sealed class ApiException(int status, string code, string detail) : Exception(detail)
{
    public int Status { get; } = status;

    public string Code { get; } = code;

    public static ApiException BadRequest(string code, string detail) => new(StatusCodes.Status400BadRequest, code, detail);

    public static ApiException NotFound(string code, string detail) => new(StatusCodes.Status404NotFound, code, detail);

    public static ApiException Forbidden(string code, string detail) => new(StatusCodes.Status403Forbidden, code, detail);

    public static ApiException Conflict(string code, string detail) => new(StatusCodes.Status409Conflict, code, detail);

    /// <summary>Non-members get the same answer as for an id that does not exist, so ids cannot be probed.</summary>
    public static ApiException ConversationNotFound() => NotFound("conversation_not_found", "No such conversation.");

    public static ApiException MessageNotFound() => NotFound("message_not_found", "No such message in this conversation.");
}

public static class Problems
{
    public static ProblemHttpResult Create(int status, string code, string detail) =>
        TypedResults.Problem(detail: detail, statusCode: status, extensions: new Dictionary<string, object?> { ["code"] = code });

    public static ProblemHttpResult Unauthorized(string detail) => Create(StatusCodes.Status401Unauthorized, "unauthorized", detail);

    /// <summary>The code for a status the framework produced without one of ours (unmatched route, wrong method).</summary>
    public static string DefaultCode(int status) => status switch
    {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        429 => "rate_limited",
        _ when status >= 500 => "internal_error",
        _ => "error",
    };
}
