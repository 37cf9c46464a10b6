namespace RealtimeChat.Infrastructure;

/// <summary>Takes the caller's <c>X-Request-Id</c> (or makes one), echoes it, and puts it on every log line of the request.</summary>
public sealed class RequestIdMiddleware(RequestDelegate next, ILogger<RequestIdMiddleware> logger)
{
    public const string HeaderName = "X-Request-Id";
    private const int MaxLength = 128;

    public async Task InvokeAsync(HttpContext context)
    {
        var requestId = context.Request.Headers[HeaderName].ToString();
        if (string.IsNullOrEmpty(requestId) || requestId.Length > MaxLength || !requestId.All(IsSafe))
        {
            requestId = Guid.NewGuid().ToString("N");
        }
        context.TraceIdentifier = requestId;
        context.Response.Headers[HeaderName] = requestId;
        using (logger.BeginScope(new Dictionary<string, object> { ["RequestId"] = requestId }))
        {
            await next(context);
        }
    }

    private static bool IsSafe(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':';
}
