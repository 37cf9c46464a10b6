using System.Collections.Frozen;
using System.Text.Json;
using System.Text.Json.Serialization;
using RealtimeChat.Infrastructure;

namespace RealtimeChat;

public static class ChatJson
{
    /// <summary>The wire format of the API, the WebSocket and the event log: snake_case, enums as their names only.</summary>
    public static readonly JsonSerializerOptions Options = Configure(new JsonSerializerOptions(JsonSerializerDefaults.Web));

    public static JsonSerializerOptions Configure(JsonSerializerOptions options)
    {
        options.PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower;
        options.DictionaryKeyPolicy = null;
        options.DefaultIgnoreCondition = JsonIgnoreCondition.Never;
        // JsonSerializerDefaults.Web reads numbers from strings ({"seq":"1"}); the API documents numbers, and
        // everything this service writes has them as numbers.
        options.NumberHandling = JsonNumberHandling.Strict;
        options.Converters.Add(new StrictEnumConverterFactory(JsonNamingPolicy.SnakeCaseLower));
        return options;
    }

    /// <summary>
    /// The HTTP API's options: the wire format, and the rules for text clients send (<see cref="RequestTextConverter"/>).
    /// Not <see cref="Options"/>, which also reads what this service stored earlier.
    /// </summary>
    public static JsonSerializerOptions ConfigureApi(JsonSerializerOptions options)
    {
        Configure(options);
        options.Converters.Add(new RequestTextConverter());
        return options;
    }
}

/// <summary>An enum value in a request named nothing the enum defines.</summary>
public sealed class InvalidEnumValueException(Type enumType, IEnumerable<string> names)
    : JsonException($"Expected one of: {string.Join(", ", names)}.")
{
    public Type EnumType { get; } = enumType;
}

/// <summary>
/// Enums as their snake_case names and nothing else. <see cref="JsonStringEnumConverter"/> also reads numbers,
/// numeric strings ("99") and comma-separated names ("admin,owner" reads as admin|owner), each of which can produce a
/// value the enum does not define; such a value was once stored in the event log and sent live.
/// </summary>
public sealed class StrictEnumConverterFactory(JsonNamingPolicy namingPolicy) : JsonConverterFactory
{
    public override bool CanConvert(Type typeToConvert) => typeToConvert.IsEnum;

    public override JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options) =>
        (JsonConverter)Activator.CreateInstance(typeof(StrictEnumConverter<>).MakeGenericType(typeToConvert), namingPolicy)!;

    private sealed class StrictEnumConverter<T> : JsonConverter<T> where T : struct, Enum
    {
        private readonly FrozenDictionary<string, T> _values;
        private readonly FrozenDictionary<T, string> _names;
        private readonly string[] _ordered;

        public StrictEnumConverter(JsonNamingPolicy policy)
        {
            var values = Enum.GetValues<T>();
            _ordered = [.. values.Select(v => policy.ConvertName(v.ToString()))];
            // Case-insensitive, as JsonStringEnumConverter was: clients sending "Group" keep working.
            _values = values.Select((v, i) => (Name: _ordered[i], Value: v)).ToFrozenDictionary(p => p.Name, p => p.Value, StringComparer.OrdinalIgnoreCase);
            _names = values.Select((v, i) => (Name: _ordered[i], Value: v)).ToFrozenDictionary(p => p.Value, p => p.Name);
        }

        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.String && reader.GetString() is { } name && _values.TryGetValue(name, out var value)
                ? value
                : throw new InvalidEnumValueException(typeof(T), _ordered);

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) =>
            writer.WriteStringValue(_names.TryGetValue(value, out var name) ? name : throw new JsonException($"{value} is not a defined {typeof(T).Name}."));

        public override T ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.GetString() is { } name && _values.TryGetValue(name, out var value) ? value : throw new InvalidEnumValueException(typeof(T), _ordered);

        public override void WriteAsPropertyName(Utf8JsonWriter writer, T value, JsonSerializerOptions options) =>
            writer.WritePropertyName(_names.TryGetValue(value, out var name) ? name : throw new JsonException($"{value} is not a defined {typeof(T).Name}."));
    }
}
