using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using static MatrixEmulator.Homeserver;

namespace MatrixEmulator;

/// <summary>Room creation, membership, sending, redaction, typing, receipts and room reads.</summary>
internal static class RoomEndpoints
{
    public static void Map(IEndpointRouteBuilder app, Homeserver hs)
    {
        var state = hs.State;

        app.MapClient("POST", "createRoom", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            foreach (var invitee in body["invite"] as JsonArray ?? [])
            {
                await hs.AskAppserviceAboutUserAsync((string)invitee!);
            }

            await WriteJsonAsync(context, new JsonObject { ["room_id"] = state.CreateRoom(requester, body) });
        });

        app.MapClient("POST", "rooms/{roomId}/join", async context =>
        {
            var requester = hs.Authenticate(context);
            await WriteJsonAsync(context, new JsonObject { ["room_id"] = state.Join(requester, Route(context, "roomId")) });
        });

        app.MapClient("POST", "join/{roomIdOrAlias}", async context =>
        {
            var requester = hs.Authenticate(context);
            var target = Route(context, "roomIdOrAlias");
            if (target.StartsWith('#'))
            {
                target = await hs.ResolveAliasAsync(target) ?? throw Errors.NotFound($"Room alias {target} not found");
            }

            await WriteJsonAsync(context, new JsonObject { ["room_id"] = state.Join(requester, target) });
        });

        app.MapClient("POST", "rooms/{roomId}/invite", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var target = (string?)body["user_id"] ?? throw Errors.MissingParam("Missing parameter: user_id");
            await hs.AskAppserviceAboutUserAsync(target);
            state.Invite(requester, Route(context, "roomId"), target);
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("POST", "rooms/{roomId}/leave", async context =>
        {
            state.Leave(hs.Authenticate(context), Route(context, "roomId"));
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("POST", "rooms/{roomId}/kick", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            state.Kick(requester, Route(context, "roomId"), (string?)body["user_id"] ?? throw Errors.MissingParam("Missing parameter: user_id"), (string?)body["reason"]);
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("PUT", "rooms/{roomId}/send/{eventType}/{txnId}", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var txnId = Route(context, "txnId");
            var eventId = state.Send(
                requester, Route(context, "roomId"), Route(context, "eventType"), body, txnKey: TxnKey(context, requester), txnId: txnId, originServerTs: AppserviceTs(context, requester));
            await WriteJsonAsync(context, new JsonObject { ["event_id"] = eventId });
        });

        // Synapse also serves the POST form without a txnId (not idempotent).
        app.MapClient("POST", "rooms/{roomId}/send/{eventType}", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var eventId = state.Send(requester, Route(context, "roomId"), Route(context, "eventType"), body, originServerTs: AppserviceTs(context, requester));
            await WriteJsonAsync(context, new JsonObject { ["event_id"] = eventId });
        });

        RequestDelegate putState = async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var stateKey = context.Request.RouteValues.TryGetValue("stateKey", out var key) ? (string?)key ?? "" : "";
            var eventId = state.Send(requester, Route(context, "roomId"), Route(context, "eventType"), body, stateKey: stateKey);
            await WriteJsonAsync(context, new JsonObject { ["event_id"] = eventId });
        };
        app.MapClient("PUT", "rooms/{roomId}/state/{eventType}", putState);
        app.MapClient("PUT", "rooms/{roomId}/state/{eventType}/{stateKey}", putState);

        RequestDelegate getState = context =>
        {
            var requester = hs.Authenticate(context);
            var stateKey = context.Request.RouteValues.TryGetValue("stateKey", out var key) ? (string?)key ?? "" : "";
            return WriteJsonAsync(context, state.GetStateContent(requester, Route(context, "roomId"), Route(context, "eventType"), stateKey));
        };
        app.MapClient("GET", "rooms/{roomId}/state/{eventType}", getState);
        app.MapClient("GET", "rooms/{roomId}/state/{eventType}/{stateKey}", getState);

        app.MapClient("GET", "rooms/{roomId}/state", context =>
            WriteJsonAsync(context, state.GetState(hs.Authenticate(context), Route(context, "roomId"))));

        app.MapClient("GET", "rooms/{roomId}/members", context =>
            WriteJsonAsync(context, new JsonObject { ["chunk"] = state.GetMembers(hs.Authenticate(context), Route(context, "roomId")) }));

        app.MapClient("GET", "rooms/{roomId}/joined_members", context =>
            WriteJsonAsync(context, new JsonObject { ["joined"] = state.GetJoinedMembers(hs.Authenticate(context), Route(context, "roomId")) }));

        app.MapClient("GET", "joined_rooms", context =>
            WriteJsonAsync(context, new JsonObject { ["joined_rooms"] = state.JoinedRooms(hs.Authenticate(context)) }));

        app.MapClient("PUT", "rooms/{roomId}/redact/{eventId}/{txnId}", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var eventId = state.Redact(requester, Route(context, "roomId"), Route(context, "eventId"), (string?)body["reason"], TxnKey(context, requester), Route(context, "txnId"));
            await WriteJsonAsync(context, new JsonObject { ["event_id"] = eventId });
        });

        app.MapClient("PUT", "rooms/{roomId}/typing/{userId}", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            var typing = (bool?)body["typing"] ?? throw Errors.MissingParam("Missing parameter: typing");
            var timeout = TimeSpan.FromMilliseconds((long?)body["timeout"] ?? 30_000);
            state.SetTyping(requester, Route(context, "roomId"), Route(context, "userId"), typing, timeout);
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("POST", "rooms/{roomId}/receipt/{receiptType}/{eventId}", async context =>
        {
            var requester = hs.Authenticate(context);
            await ReadJsonAsync(context);
            state.SendReceipt(requester, Route(context, "roomId"), Route(context, "receiptType"), Route(context, "eventId"));
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("GET", "rooms/{roomId}/event/{eventId}", context =>
            WriteJsonAsync(context, state.GetEvent(hs.Authenticate(context), Route(context, "roomId"), Route(context, "eventId"))));
    }

    // Synapse 1.67 (RoomSendEventRestServlet) lets an appservice set origin_server_ts with ?ts= on /send only; state
    // and redaction requests ignore it, and a user's ts is ignored too (measured).
    private static long? AppserviceTs(HttpContext context, Requester requester)
    {
        if (!requester.IsAppservice || Query(context, "ts") is not { } ts)
        {
            return null;
        }

        const System.Globalization.NumberStyles PythonInt =
            System.Globalization.NumberStyles.AllowLeadingSign | System.Globalization.NumberStyles.AllowLeadingWhite | System.Globalization.NumberStyles.AllowTrailingWhite;
        return long.TryParse(ts, PythonInt, System.Globalization.CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new MatrixException(400, "M_INVALID_PARAM", "Query parameter 'ts' must be an integer");
    }

    // Synapse's HttpTransactionCache key: the request path plus who asked. For the appservice "who" is the appservice
    // itself, whichever ghost it masquerades as, so a txnId reused by another ghost returns the first event.
    private static string TxnKey(HttpContext context, Requester requester) => $"{context.Request.Path}|{requester.TxnScope}";
}
