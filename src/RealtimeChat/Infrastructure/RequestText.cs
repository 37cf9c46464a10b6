using System.Text.Json;
using System.Text.Json.Serialization;

namespace RealtimeChat.Infrastructure;

/// <summary>
/// The one rule for text a client sends, wherever it ends up (JSON bodies, multipart fields, file names, content
/// types): no U+0000. PostgreSQL text cannot hold it, so it failed there as a 500 while SQLite stored it; it has no
/// meaning in chat text, so it is refused everywhere rather than only where a column would choke on it.
/// </summary>
public static class RequestText
{
    public const string Code = "invalid_text";

    public static bool IsAcceptable(string value) => !value.Contains('\0');

    public static string Detail(string field) => $"{field}: must not contain U+0000 (NUL).";

    /// <returns><paramref name="value"/>, if acceptable.</returns>
    public static string Require(string value, string field) =>
        IsAcceptable(value) ? value : throw ApiException.BadRequest(Code, Detail(field));
}

/// <summary>A string in a request body that <see cref="RequestText"/> refuses; the serializer fills in its <see cref="JsonException.Path"/>.</summary>
public sealed class InvalidTextException() : JsonException("must not contain U+0000 (NUL).");

/// <summary>
/// Applies <see cref="RequestText"/> to every string the API reads from JSON, so no endpoint can forget it. Only on
/// the API's own options: stored payloads and the homeserver's JSON are read without it.
/// </summary>
public sealed class RequestTextConverter : JsonConverter<string>
{
    public override string Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            throw new JsonException($"Expected a string, got {reader.TokenType}.");
        }
        var value = reader.GetString()!;
        // Raw JSON cannot carry a control character unescaped: only an escaped string can hold U+0000.
        return !reader.ValueIsEscaped || RequestText.IsAcceptable(value) ? value : throw new InvalidTextException();
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}
