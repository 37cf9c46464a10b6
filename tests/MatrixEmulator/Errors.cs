using System.Text.Json.Nodes;

namespace MatrixEmulator;

/// <summary>A Matrix error response; the texts are Synapse 1.67's so clients see what the recordings show.</summary>
public sealed class MatrixException(int status, string errcode, string error, JsonObject? extra = null)
    : Exception($"{status} {errcode}: {error}")
{
    public int Status { get; } = status;
    public string Errcode { get; } = errcode;
    public string Error { get; } = error;

    public JsonObject ToJson()
    {
        var body = new JsonObject { ["errcode"] = Errcode, ["error"] = Error };
        if (extra is not null)
        {
            foreach (var (key, value) in extra)
            {
                body[key] = value?.DeepClone();
            }
        }

        return body;
    }
}

internal static class Errors
{
    public static MatrixException Forbidden(string error) => new(403, "M_FORBIDDEN", error);

    public static MatrixException NotFound(string error) => new(404, "M_NOT_FOUND", error);

    public static MatrixException Unknown(string error) => new(400, "M_UNKNOWN", error);

    public static MatrixException BadJson(string error) => new(400, "M_BAD_JSON", error);

    public static MatrixException MissingParam(string error) => new(400, "M_MISSING_PARAM", error);

    public static MatrixException Unrecognized() => new(400, "M_UNRECOGNIZED", "Unrecognized request");

    public static MatrixException MissingToken() => new(401, "M_MISSING_TOKEN", "Missing access token");

    public static MatrixException UnknownToken() =>
        new(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.", new JsonObject { ["soft_logout"] = false });

    public static MatrixException LimitExceeded(TimeSpan retryAfter) =>
        new(429, "M_LIMIT_EXCEEDED", "Too Many Requests",
            new JsonObject { ["retry_after_ms"] = (long)Math.Ceiling(retryAfter.TotalMilliseconds) });

    public static MatrixException NotInRoom(string userId, string roomId, string? membership) =>
        Forbidden($"User {userId} not in room {roomId} ({membership ?? "None"})");
}
