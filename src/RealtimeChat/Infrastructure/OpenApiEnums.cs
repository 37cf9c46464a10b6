using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace RealtimeChat.Infrastructure;

public static class OpenApiEnums
{
    /// <summary>
    /// The document cannot see inside <see cref="StrictEnumConverterFactory"/>, so it is told what the converter accepts:
    /// a string, one of the enum's snake_case names.
    /// </summary>
    public static OpenApiOptions AddEnumNames(this OpenApiOptions options) => options.AddSchemaTransformer((schema, context, _) =>
    {
        var type = Nullable.GetUnderlyingType(context.JsonTypeInfo.Type) ?? context.JsonTypeInfo.Type;
        if (type.IsEnum)
        {
            schema.Type = JsonSchemaType.String;
            schema.Enum = [.. Enum.GetNames(type).Select(name => (JsonNode)JsonValue.Create(JsonNamingPolicy.SnakeCaseLower.ConvertName(name)))];
        }
        return Task.CompletedTask;
    });
}
