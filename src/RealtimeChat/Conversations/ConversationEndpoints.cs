using System.Security.Claims;
using Microsoft.AspNetCore.Http.HttpResults;
using RealtimeChat.Identity;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Conversations;

public static class ConversationEndpoints
{
    private const int MembersPerPermit = 100;

    public static RouteGroupBuilder MapConversations(this IEndpointRouteBuilder routes)
    {
        var group = routes.MapGroup("/api/v1/conversations").WithTags("Conversations").RequireAuthorization();

        group.MapPost("/", async Task<Results<Created<ConversationDto>, Ok<ConversationDto>, ProblemHttpResult>> (
            CreateConversationRequest request, HttpContext context, ClaimsPrincipal user, ConversationService conversations, ChatRateLimits limits, CancellationToken ct) =>
        {
            // A group's members are membership changes too: one more unit of the budget per 100 of them, so a flood
            // of 1,000-member groups is not 1,000 times cheaper than adding those members one by one.
            if (limits.ChargeExtra(context, (request.MemberIds?.Count ?? 0) / MembersPerPermit) is { } refused)
            {
                return refused;
            }
            var (conversation, created) = await conversations.CreateAsync(user.UserId(), request, ct);
            return created
                ? TypedResults.Created($"/api/v1/conversations/{conversation.Id}", conversation)
                : TypedResults.Ok(conversation);
        }).RateLimited(RateLimitClass.Conversations).WithSummary("Create a direct or group conversation (a direct one is returned if it exists)");

        group.MapGet("/", async (string? cursor, int? limit, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
            TypedResults.Ok(await conversations.ListAsync(user.UserId(), cursor, limit, ct)))
            .WithSummary("My conversations, newest activity first, with last message preview and unread count");

        group.MapGet("/{conversationId}", async (Guid conversationId, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
            TypedResults.Ok(await conversations.GetAsync(user.UserId(), conversationId, ct)));

        group.MapPatch("/{conversationId}", async (Guid conversationId, UpdateConversationRequest request, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
            TypedResults.Ok(await conversations.RenameAsync(user.UserId(), conversationId, request, ct)))
            .RateLimited(RateLimitClass.Conversations)
            .WithSummary("Rename a group conversation (owner or admin)");

        group.MapGet("/{conversationId}/members", async (Guid conversationId, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
            TypedResults.Ok(await conversations.MembersAsync(user.UserId(), conversationId, ct)));

        group.MapPost("/{conversationId}/members", async (Guid conversationId, AddMemberRequest request, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
        {
            var member = await conversations.AddMemberAsync(user.UserId(), conversationId, request, ct);
            return TypedResults.Created($"/api/v1/conversations/{conversationId}/members/{member.UserId}", member);
        }).RateLimited(RateLimitClass.Conversations);

        group.MapPatch("/{conversationId}/members/{userId}", async (Guid conversationId, Guid userId, UpdateMemberRequest request, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
        {
            await conversations.UpdateMemberAsync(user.UserId(), conversationId, userId, request, ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Conversations).WithSummary("Change a member's role (owner only; making someone owner transfers ownership)");

        group.MapDelete("/{conversationId}/members/{userId}", async (Guid conversationId, Guid userId, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
        {
            await conversations.RemoveMemberAsync(user.UserId(), conversationId, userId, ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Conversations);

        group.MapPost("/{conversationId}/leave", async (Guid conversationId, ClaimsPrincipal user, ConversationService conversations, CancellationToken ct) =>
        {
            await conversations.RemoveMemberAsync(user.UserId(), conversationId, user.UserId(), ct);
            return TypedResults.NoContent();
        }).RateLimited(RateLimitClass.Conversations);

        return group;
    }
}
