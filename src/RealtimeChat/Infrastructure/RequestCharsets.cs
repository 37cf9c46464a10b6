using System.Text;
using Microsoft.Net.Http.Headers;

namespace RealtimeChat.Infrastructure;

/// <summary>
/// The charset of a JSON request body, checked once for every endpoint. The framework decodes a JSON body in the
/// charset its Content-Type names and throws InvalidOperationException (a 500) for a name it does not know; it also
/// takes a quoted name (<c>charset="utf-8"</c>, which RFC 9110 makes the same as the bare one) literally and fails on it.
/// </summary>
public static class RequestCharsets
{
    public static IApplicationBuilder UseRequestCharsets(this IApplicationBuilder app) => app.Use((context, next) =>
    {
        var request = context.Request;
        if (request.HasJsonContentType() && MediaTypeHeaderValue.TryParse(request.ContentType, out var type) && type.Charset.HasValue)
        {
            var name = HeaderUtilities.RemoveQuotes(type.Charset).Value;
            // The lookup the framework makes, so that what passes here is what it can decode.
            if (string.IsNullOrWhiteSpace(name) || !IsKnown(name))
            {
                throw new ApiException(StatusCodes.Status415UnsupportedMediaType, "unsupported_charset",
                    $"The request's charset '{name}' is not a known encoding; send JSON as UTF-8.");
            }
            if (name != type.Charset.Value)
            {
                type.Charset = name;
                request.ContentType = type.ToString();
            }
        }
        return next(context);
    });

    private static bool IsKnown(string name)
    {
        try
        {
            Encoding.GetEncoding(name);
            return true;
        }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException)
        {
            return false;
        }
    }
}
