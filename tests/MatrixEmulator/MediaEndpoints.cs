using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using static MatrixEmulator.Homeserver;

namespace MatrixEmulator;

/// <summary>The media repository: v3 upload/download, and the authenticated v1 download when enabled.</summary>
internal static class MediaEndpoints
{
    public static void Map(IEndpointRouteBuilder app, Homeserver hs)
    {
        var state = hs.State;

        app.MapMedia("POST", "upload", async context =>
        {
            var requester = hs.Authenticate(context);
            // Synapse 1.67's upload_resource: a chunked upload is refused before its body is read.
            if (context.Request.ContentLength is null)
            {
                throw new MatrixException(400, "M_UNKNOWN", "Request must specify a Content-Length");
            }
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
            var contentType = context.Request.ContentType ?? "application/octet-stream";
            var contentUri = state.Upload(requester, contentType, Query(context, "filename"), buffer.ToArray());
            await WriteJsonAsync(context, new JsonObject { ["content_uri"] = contentUri });
        });

        app.MapMedia("GET", "config", context => WriteJsonAsync(context, new JsonObject { ["m.upload.size"] = hs.Options.MaxUploadBytes }));

        RequestDelegate download = context => ServeAsync(context, state);
        app.MapMedia("GET", "download/{serverName}/{mediaId}", download);
        app.MapMedia("GET", "download/{serverName}/{mediaId}/{fileName}", download);

        if (hs.Options.AuthenticatedMedia)
        {
            RequestDelegate authenticated = context =>
            {
                hs.Authenticate(context);
                return ServeAsync(context, state);
            };
            app.MapGet("/_matrix/client/v1/media/download/{serverName}/{mediaId}", authenticated);
            app.MapGet("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", authenticated);
            app.MapGet("/_matrix/client/v1/media/config", context =>
            {
                hs.Authenticate(context);
                return WriteJsonAsync(context, new JsonObject { ["m.upload.size"] = hs.Options.MaxUploadBytes });
            });
        }
    }

    private static async Task ServeAsync(HttpContext context, HomeserverState state)
    {
        var item = state.Download(Route(context, "serverName"), Route(context, "mediaId"));
        context.Response.ContentType = item.ContentType;
        var fileName = context.Request.RouteValues.TryGetValue("fileName", out var name) ? (string?)name : item.FileName;
        if (fileName is not null)
        {
            context.Response.Headers.ContentDisposition = $"inline; filename={Uri.EscapeDataString(fileName)}";
        }

        context.Response.ContentLength = item.Bytes.Length;
        await context.Response.Body.WriteAsync(item.Bytes, context.RequestAborted);
    }
}
