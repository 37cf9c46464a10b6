using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using static MatrixEmulator.Homeserver;

namespace MatrixEmulator;

/// <summary>Accounts, profiles, filters, the room directory and appservice registration.</summary>
internal static class ClientServerEndpoints
{
    public static void Map(IEndpointRouteBuilder app, Homeserver hs)
    {
        var state = hs.State;

        // With AuthenticatedMedia on, the emulator plays a newer server and advertises v1.11, where that API arrived.
        string[] versions = ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", .. hs.Options.AuthenticatedMedia ? ["v1.11"] : Array.Empty<string>()];
        app.MapGet("/_matrix/client/versions", context => WriteJsonAsync(context, new JsonObject
        {
            ["versions"] = new JsonArray(versions.Select(v => (JsonNode)v).ToArray()),
            // Synapse 1.67's list with its default configuration (measured): nothing about authenticated media, so a
            // client learns that it must use /_matrix/media/v3.
            ["unstable_features"] = new JsonObject
            {
                ["org.matrix.label_based_filtering"] = true,
                ["org.matrix.e2e_cross_signing"] = true,
                ["org.matrix.msc2432"] = true,
                ["uk.half-shot.msc2666.mutual_rooms"] = true,
                ["io.element.e2ee_forced.public"] = false,
                ["io.element.e2ee_forced.private"] = false,
                ["io.element.e2ee_forced.trusted_private"] = false,
                ["org.matrix.msc3026.busy_presence"] = false,
                ["org.matrix.msc2285.stable"] = true,
                ["org.matrix.msc3827.stable"] = true,
                ["org.matrix.msc2716"] = false,
                ["org.matrix.msc3030"] = false,
                ["org.matrix.msc3440.stable"] = true,
                ["fi.mau.msc2815"] = false,
            },
        }));

        app.MapClient("GET", "login", context => WriteJsonAsync(context, new JsonObject
        {
            ["flows"] = new JsonArray(new JsonObject { ["type"] = "m.login.password" }, new JsonObject { ["type"] = "m.login.application_service" }),
        }));

        app.MapClient("POST", "login", async context =>
        {
            var body = await ReadJsonAsync(context);
            var identifier = (string?)body["identifier"]?["user"] ?? (string?)body["user"] ?? throw Errors.MissingParam("Missing parameter: identifier");
            Session session;
            switch ((string?)body["type"])
            {
                case "m.login.password":
                    session = state.Login(identifier, (string?)body["password"], (string?)body["device_id"]);
                    break;
                case "m.login.application_service":
                    var requester = hs.Authenticate(context);
                    var userId = identifier.StartsWith('@') ? identifier : state.UserIdFor(identifier);
                    if (!requester.IsAppservice || !hs.Options.Appservice!.IsInUserNamespace(userId) || state.FindUser(userId) is null)
                    {
                        throw Errors.Forbidden("Invalid username or password");
                    }

                    session = state.CreateSession(userId, (string?)body["device_id"]);
                    break;
                default:
                    throw Errors.Unknown("Unknown login type");
            }

            await WriteJsonAsync(context, new JsonObject
            {
                ["user_id"] = session.UserId,
                ["access_token"] = session.AccessToken,
                ["home_server"] = state.ServerName,
                ["device_id"] = session.DeviceId,
            });
        });

        app.MapClient("POST", "logout", async context =>
        {
            var requester = hs.Authenticate(context);
            if (requester.AccessToken is not null)
            {
                state.Logout(requester.AccessToken);
            }

            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("POST", "register", async context =>
        {
            var body = await ReadJsonAsync(context);
            if ((string?)body["type"] != "m.login.application_service")
            {
                // Synapse's default: open registration is off, so only the appservice can create accounts.
                throw Errors.Forbidden("Registration has been disabled");
            }

            var requester = hs.Authenticate(context);
            if (!requester.IsAppservice)
            {
                throw Errors.Forbidden("Invalid application service token.");
            }

            var localpart = (string?)body["username"] ?? throw Errors.MissingParam("Missing parameter: username");
            var (user, session) = state.RegisterAppserviceUser(localpart, (bool?)body["inhibit_login"] ?? false);
            var response = new JsonObject { ["user_id"] = user.UserId, ["home_server"] = state.ServerName };
            if (session is not null)
            {
                response["access_token"] = session.AccessToken;
                response["device_id"] = session.DeviceId;
            }

            await WriteJsonAsync(context, response);
        });

        app.MapClient("GET", "account/whoami", context =>
        {
            var requester = hs.Authenticate(context);
            var response = new JsonObject { ["user_id"] = requester.UserId, ["is_guest"] = false };
            if (requester.DeviceId is not null)
            {
                response["device_id"] = requester.DeviceId;
            }

            return WriteJsonAsync(context, response);
        });

        app.MapClient("GET", "profile/{userId}", context => WriteJsonAsync(context, state.GetProfile(Route(context, "userId"))));

        foreach (var field in (string[])["displayname", "avatar_url"])
        {
            app.MapClient("GET", $"profile/{{userId}}/{field}", context => WriteJsonAsync(context, state.GetProfile(Route(context, "userId"), field)));

            app.MapClient("PUT", $"profile/{{userId}}/{field}", async context =>
            {
                var requester = hs.Authenticate(context);
                var body = await ReadJsonAsync(context);
                state.SetProfileField(requester, Route(context, "userId"), field, (string?)body[field]);
                await WriteJsonAsync(context, new JsonObject());
            });
        }

        app.MapClient("POST", "user/{userId}/filter", async context =>
        {
            var requester = hs.Authenticate(context);
            var filterId = state.CreateFilter(requester, Route(context, "userId"), await ReadJsonAsync(context));
            await WriteJsonAsync(context, new JsonObject { ["filter_id"] = filterId });
        });

        app.MapClient("GET", "user/{userId}/filter/{filterId}", context =>
        {
            hs.Authenticate(context);
            return WriteJsonAsync(context, state.GetFilter(Route(context, "userId"), Route(context, "filterId")).DeepClone());
        });

        app.MapClient("GET", "directory/room/{alias}", async context =>
        {
            hs.Authenticate(context);
            var alias = Route(context, "alias");
            var roomId = await hs.ResolveAliasAsync(alias) ?? throw Errors.NotFound($"Room alias {alias} not found");
            await WriteJsonAsync(context, new JsonObject { ["room_id"] = roomId, ["servers"] = new JsonArray(state.ServerName) });
        });

        app.MapClient("PUT", "directory/room/{alias}", async context =>
        {
            var requester = hs.Authenticate(context);
            var body = await ReadJsonAsync(context);
            state.CreateAlias(requester, Route(context, "alias"), (string?)body["room_id"] ?? throw Errors.MissingParam("Missing parameter: room_id"));
            await WriteJsonAsync(context, new JsonObject());
        });

        app.MapClient("DELETE", "directory/room/{alias}", async context =>
        {
            state.DeleteAlias(hs.Authenticate(context), Route(context, "alias"));
            await WriteJsonAsync(context, new JsonObject());
        });
    }
}
