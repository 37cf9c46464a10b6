using System.Net;
using System.Net.Http.Headers;

namespace RealtimeChat.Tests.Media;

/// <summary>Uploads and ranged downloads as clients make them, and the store's key shape, for every media test.</summary>
internal static class MediaRequests
{
    public static MultipartFormDataContent Form(byte[] bytes, string contentType, string fileName, params (string Name, string Value)[] fields)
    {
        var file = new ByteArrayContent(bytes);
        file.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        var form = new MultipartFormDataContent { { file, "file", fileName } };
        foreach (var (name, value) in fields)
        {
            form.Add(new StringContent(value), name);
        }
        return form;
    }

    /// <summary>A download with a <c>Range</c> header sent as written (invalid ones included).</summary>
    public static Task<HttpResponseMessage> GetRangeAsync(HttpClient client, Guid mediaId, string range)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"/api/v1/media/{mediaId}");
        request.Headers.TryAddWithoutValidation("Range", range);
        return client.SendAsync(request);
    }

    /// <summary>A ranged download answers 206 with exactly bytes <paramref name="from"/> to <paramref name="to"/> of the file.</summary>
    public static async Task AssertRangeAsync(HttpClient client, Guid mediaId, byte[] file, string range, int from, int to)
    {
        using var response = await GetRangeAsync(client, mediaId, range);
        Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
        Assert.Equal($"bytes {from}-{to}/{file.Length}", response.Content.Headers.ContentRange?.ToString());
        Assert.Equal(file[from..(to + 1)], await response.Content.ReadAsByteArrayAsync());
    }

    /// <summary>The storage key the service gives a media id (two-character fan-out directory, then the id).</summary>
    public static string Key(Guid mediaId)
    {
        var name = mediaId.ToString("N");
        return $"{name[^2..]}/{name}";
    }
}
