using System.Security.Claims;
using Microsoft.AspNetCore.Http.HttpResults;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Messages;

public static class MessageEndpoints
{
    public static RouteGroupBuilder MapMessages(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/conversations/{conversationId}").WithTags("Messages").RequireAuthorization();

        group.MapPost("/messages", async Task<Results<Created<MessageDto>, Ok<MessageDto>>> (
            Guid conversationId, SendMessageRequest request, ClaimsPrincipal user, MessageService messages) =>
        {
            var (message, created) = await messages.SendTextAsync(user.UserId(), conversationId, request);
            return created
                ? TypedResults.Created($"/api/v1/conversations/{conversationId}/messages/{message.Id}", message)
                : TypedResults.Ok(message);
        })
        .RateLimited(RateLimitClass.Sends)
        .WithSummary("Send a text message (a repeated client_message_id returns the original)");

        group.MapGet("/messages", async (Guid conversationId, long? before, long? after, int? limit, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
            TypedResults.Ok(await messages.ListAsync(user.UserId(), conversationId, before, after, limit, ct)))
            .WithSummary("History, paged by sequence number; returned oldest first");

        group.MapGet("/messages/{messageId}", async (Guid conversationId, Guid messageId, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
            TypedResults.Ok(await messages.GetAsync(user.UserId(), conversationId, messageId, ct)));

        group.MapPatch("/messages/{messageId}", async (Guid conversationId, Guid messageId, EditMessageRequest request, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
            TypedResults.Ok(await messages.EditAsync(user.UserId(), conversationId, messageId, request, ct)))
            .RateLimited(RateLimitClass.Edits)
            .WithSummary("Edit a text message (sender only)");

        group.MapDelete("/messages/{messageId}", async (Guid conversationId, Guid messageId, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
        {
            await messages.DeleteAsync(user.UserId(), conversationId, messageId, ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Edits).WithSummary("Delete a message (sender, owner or admin); its content is erased");

        group.MapPut("/messages/{messageId}/reactions/{reaction}", async (Guid conversationId, Guid messageId, string reaction, HttpContext context, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
        {
            await messages.AddReactionAsync(user.UserId(), conversationId, messageId, ReactionText.FromPath(context, reaction), ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Edits);

        group.MapDelete("/messages/{messageId}/reactions/{reaction}", async (Guid conversationId, Guid messageId, string reaction, HttpContext context, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
        {
            await messages.RemoveReactionAsync(user.UserId(), conversationId, messageId, ReactionText.FromPath(context, reaction), ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Edits);

        group.MapPut("/read", async (Guid conversationId, MarkReadRequest request, ClaimsPrincipal user, MessageService messages, CancellationToken ct) =>
            TypedResults.Ok(new { last_read_seq = await messages.MarkReadAsync(user.UserId(), conversationId, request, ct) }))
            .RateLimited(RateLimitClass.ReadMarkers)
            .WithSummary("Move my read marker forward");

        return group;
    }
}
