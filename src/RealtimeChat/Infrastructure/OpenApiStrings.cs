using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace RealtimeChat.Infrastructure;

public static class OpenApiStrings
{
    /// <summary>
    /// The document cannot see inside <see cref="RequestTextConverter"/> either and would show every string as "any
    /// value": it is a string, nullable where the property is.
    /// </summary>
    public static OpenApiOptions AddStringTypes(this OpenApiOptions options) => options.AddSchemaTransformer((schema, context, _) =>
    {
        if (context.JsonTypeInfo.Type == typeof(string) && schema.Type is null)
        {
            schema.Type = context.JsonPropertyInfo is { IsGetNullable: true } or { IsSetNullable: true }
                ? JsonSchemaType.String | JsonSchemaType.Null
                : JsonSchemaType.String;
        }
        return Task.CompletedTask;
    });
}
