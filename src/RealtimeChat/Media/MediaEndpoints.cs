using System.Security.Claims;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Net.Http.Headers;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;

namespace RealtimeChat.Media;

public static class MediaEndpoints
{
    public static IEndpointRouteBuilder MapMedia(this IEndpointRouteBuilder routes)
    {
        var uploads = routes.MapGroup("/api/v1/conversations/{conversationId}").WithTags("Media").RequireAuthorization();

        uploads.MapPost("/media", (Guid conversationId, HttpRequest request, ClaimsPrincipal user, MediaService media, ChatRateLimits limits, CancellationToken ct) =>
                UploadAsync(conversationId, request, user, media, limits, audioOnly: false, ct))
            .RateLimited(RateLimitClass.Uploads)
            .WithSummary("Send a file as a message (multipart/form-data: file, optional caption, duration_ms, client_message_id, reply_to)");

        uploads.MapPost("/messages/audio", (Guid conversationId, HttpRequest request, ClaimsPrincipal user, MediaService media, ChatRateLimits limits, CancellationToken ct) =>
                UploadAsync(conversationId, request, user, media, limits, audioOnly: true, ct))
            .RateLimited(RateLimitClass.Uploads)
            .WithSummary("Send a voice message: as /media, but only audio/* files");

        routes.MapMethods("/api/v1/media/{mediaId}", [HttpMethods.Get, HttpMethods.Head], async (
                Guid mediaId, ClaimsPrincipal user, MediaReader media, HttpRequest request, HttpResponse response, CancellationToken ct) =>
            {
                // The framework serves "items=0-1" as if it were bytes; RFC 9110 (14.2) has a server ignore a unit it does not know.
                if (RangeHeaderValue.TryParse(request.Headers.Range.ToString(), out var range) && !"bytes".Equals(range.Unit.Value, StringComparison.OrdinalIgnoreCase))
                {
                    request.Headers.Range = default;
                }
                var download = await media.OpenAsync(user.UserId(), mediaId, ct);
                var disposition = new ContentDispositionHeaderValue("inline");
                if (download.FileName is not null)
                {
                    disposition.SetHttpFileName(download.FileName);
                }
                response.Headers.ContentDisposition = disposition.ToString();
                response.Headers.CacheControl = "private";
                // Uploaded content is served from the API's origin: never sniffed into HTML, never able to run script.
                response.Headers.XContentTypeOptions = "nosniff";
                response.Headers.ContentSecurityPolicy = "default-src 'none'; sandbox";
                // A media id names immutable bytes, so it is a strong validator.
                return TypedResults.Stream(
                    download.Content, download.ContentType, lastModified: download.CreatedAt,
                    entityTag: new EntityTagHeaderValue($"\"{mediaId}\""), enableRangeProcessing: true);
            })
            .RequireAuthorization()
            .WithTags("Media")
            .WithSummary("A file sent in a conversation you are in; supports single byte ranges");

        return routes;
    }

    private static async Task<Results<Created<MessageDto>, Ok<MessageDto>, ProblemHttpResult>> UploadAsync(
        Guid conversationId, HttpRequest request, ClaimsPrincipal user, MediaService media, ChatRateLimits limits, bool audioOnly, CancellationToken ct)
    {
        // Charged by the request's declared length, before a byte of it is read; one of unknown length as the largest allowed.
        if (limits.ChargeExtra(request.HttpContext, limits.ExtraUploadPermits(request.ContentLength ?? media.MaxRequestBytes)) is { } refused)
        {
            return refused;
        }
        var (message, created) = await media.UploadAsync(user.UserId(), conversationId, request, audioOnly, ct);
        return created
            ? TypedResults.Created($"/api/v1/conversations/{conversationId}/messages/{message.Id}", message)
            : TypedResults.Ok(message);
    }
}
