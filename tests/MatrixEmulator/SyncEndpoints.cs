using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using static MatrixEmulator.Homeserver;

namespace MatrixEmulator;

/// <summary>/sync (initial, incremental, long-poll) and /messages.</summary>
internal static class SyncEndpoints
{
    public static void Map(IEndpointRouteBuilder app, Homeserver hs)
    {
        var state = hs.State;

        app.MapClient("GET", "sync", async context =>
        {
            var requester = hs.Authenticate(context);
            var since = Query(context, "since");
            var fullState = Query(context, "full_state") == "true";
            var timeout = TimeSpan.FromMilliseconds(long.TryParse(Query(context, "timeout"), out var ms) ? ms : 0);
            var filter = Query(context, "filter") switch
            {
                null => [],
                var inline when inline.StartsWith('{') => JsonNode.Parse(inline) as JsonObject ?? [],
                var filterId => state.GetFilter(requester.UserId, filterId),
            };

            // Like Synapse, an initial or full-state sync answers at once; an incremental one waits for something to report.
            var deadline = DateTimeOffset.UtcNow + timeout;
            while (true)
            {
                var change = state.NextChange();
                var remaining = deadline - DateTimeOffset.UtcNow;
                var response = state.Sync(requester, since, filter, fullState, nullIfEmpty: remaining > TimeSpan.Zero);
                if (response is not null)
                {
                    await WriteJsonAsync(context, response);
                    return;
                }

                await Task.WhenAny(change, Task.Delay(remaining, context.RequestAborted));
                context.RequestAborted.ThrowIfCancellationRequested();
            }
        });

        app.MapClient("GET", "rooms/{roomId}/messages", context =>
        {
            var requester = hs.Authenticate(context);
            var limit = int.TryParse(Query(context, "limit"), out var l) ? Math.Clamp(l, 0, 1000) : 10;
            var dir = Query(context, "dir") ?? "f";
            if (dir is not ("b" or "f"))
            {
                throw Errors.Unknown("Unknown value for dir");
            }

            return WriteJsonAsync(context, state.Messages(requester, Route(context, "roomId"), Query(context, "from"), dir, limit, Query(context, "to")));
        });
    }
}
