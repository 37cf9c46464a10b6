using System.Globalization;
using System.Text;
using Dapper;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using RealtimeChat.Conversations;
using RealtimeChat.Infrastructure;
using RealtimeChat.Messages;
using RealtimeChat.Storage;

namespace RealtimeChat.Media;

/// <summary>A stored file opened for reading: its plaintext as a seekable stream, and what to tell the client.</summary>

/// <summary>
/// Uploads (a file plus the message that carries it) and downloads of media. The file is encrypted while it
/// streams from the request to the store; its media row commits in the message's transaction, and a blob
/// whose row did not commit is deleted.
/// </summary>
public sealed class MediaService(
    ChatDatabase database,
    MessageService messages,
    MediaCipher mediaCipher,
    IMediaStore store,
    IOptions<MediaOptions> options,
    IOptions<MessageOptions> messageOptions,
    ILogger<MediaService> logger)
{
    private const int MaxFieldBytes = 1024;
    private const int MaxFileNameLength = 255;
    private const int MaxContentTypeLength = 255;
    private const int MaxBoundaryLength = 70;
    // Room in the request body for part headers, boundaries and the small fields, on top of the file and caption.
    private const long FormOverheadBytes = 64 * 1024;
    private const string DefaultContentType = "application/octet-stream";
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The largest upload request: the largest file, the largest caption, and the form around them.</summary>
    public long MaxRequestBytes => options.Value.MaxUploadBytes + messageOptions.Value.MaxContentBytes + FormOverheadBytes;

    /// <param name="audioOnly">Refuse anything but <c>audio/*</c> (the voice-message endpoint).</param>
    public async Task<(MessageDto Message, bool Created)> UploadAsync(
        Guid userId, Guid conversationId, HttpRequest request, bool audioOnly, CancellationToken cancellationToken)
    {
        // Before any of the body is read: a non-member's upload is refused without storing a byte.
        await using (var connection = await database.OpenAsync(cancellationToken))
        {
            await connection.RequireMemberAsync(conversationId, userId);
        }
        var reader = new MultipartReader(MultipartBoundary(request), request.Body);
        var limit = request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>();
        if (limit is { IsReadOnly: false })
        {
            limit.MaxRequestBodySize = MaxRequestBytes;
        }

        StoredFile? file = null;
        try
        {
            var form = new UploadForm();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (await FromBody(() => reader.ReadNextSectionAsync(cancellationToken)) is { } section)
            {
                var disposition = section.GetContentDispositionHeader()
                    ?? throw ApiException.BadRequest("malformed_multipart", "A multipart section has no valid Content-Disposition header.");
                var name = HeaderUtilities.RemoveQuotes(disposition.Name).Value ?? "";
                if (!seen.Add(name))
                {
                    throw ApiException.BadRequest("duplicate_field", $"The form field '{name}' appears more than once.");
                }
                switch (name)
                {
                    case "file":
                        file = await StoreFileAsync(section.Body, section.ContentType, SafeFileName(disposition), audioOnly, cancellationToken);
                        break;
                    case "caption":
                        form.Caption = await ReadCaptionAsync(section, cancellationToken);
                        break;
                    case "duration_ms":
                        form.DurationMs = int.TryParse(await ReadFieldAsync(section, name, "invalid_duration", cancellationToken), NumberStyles.None, CultureInfo.InvariantCulture, out var duration)
                            ? duration
                            : throw ApiException.BadRequest("invalid_duration", "duration_ms must be a whole number of milliseconds, 0 or more.");
                        break;
                    case "client_message_id":
                        form.ClientMessageId = await ReadFieldAsync(section, name, "invalid_client_message_id", cancellationToken);
                        break;
                    case "reply_to":
                        form.ReplyTo = Guid.TryParse(await ReadFieldAsync(section, name, "invalid_reply_to", cancellationToken), out var replyTo)
                            ? replyTo
                            : throw ApiException.BadRequest("invalid_reply_to", "reply_to must be a message id.");
                        break;
                }
            }
            if (file is null)
            {
                throw ApiException.BadRequest("file_required", "The form has no 'file' part.");
            }

            return await SendWithFileAsync(userId, conversationId, file, form.Caption, form.DurationMs, form.ClientMessageId, form.ReplyTo);
        }
        catch
        {
            if (file is not null)
            {
                await DiscardAsync(file.StorageKey);
            }
            throw;
        }
    }

    /// <summary>Stores a file that arrived from Matrix and the message that carries it, as <paramref name="userId"/>.</summary>
    public async Task<MessageDto> ImportFromMatrixAsync(
        Guid userId, Guid conversationId, Stream content, string? contentType, string? fileName, int? durationMs, string? caption,
        Guid? replyTo, EventOrigin origin, CancellationToken cancellationToken)
    {
        var file = await StoreFileAsync(content, contentType, fileName, audioOnly: false, cancellationToken);
        try
        {
            return (await SendWithFileAsync(userId, conversationId, file, caption, durationMs, null, replyTo, origin)).Message;
        }
        catch
        {
            await DiscardAsync(file.StorageKey);
            throw;
        }
    }

    private async Task<(MessageDto Message, bool Created)> SendWithFileAsync(
        Guid userId, Guid conversationId, StoredFile stored, string? caption, int? durationMs, string? clientMessageId, Guid? replyTo,
        EventOrigin origin = default)
    {
        var media = new NewMedia(stored.MediaId, stored.StorageKey, stored.ContentType, stored.SizeBytes, durationMs, stored.FileName, stored.WrappedKey);
        var (message, created) = await messages.SendAsync(
            userId, conversationId, new NewMessage(stored.Kind, caption ?? stored.FileName ?? "", clientMessageId, replyTo, media, origin));
        if (!created)
        {
            // A retry of an earlier upload: the original message keeps its own file.
            await DiscardAsync(stored.StorageKey);
        }
        return (message, created);
    }

    private async Task<StoredFile> StoreFileAsync(
        Stream body, string? contentTypeHeader, string? fileName, bool audioOnly, CancellationToken cancellationToken)
    {
        var contentType = AcceptedContentType(contentTypeHeader, audioOnly);
        var kind = contentType.StartsWith("audio/", StringComparison.OrdinalIgnoreCase) ? MessageKinds.Audio
            : contentType.StartsWith("image/", StringComparison.OrdinalIgnoreCase) ? MessageKinds.Image
            : MessageKinds.File;

        var plaintext = new byte[MediaCipher.ChunkSize];
        var filled = await ReadChunkAsync(body, plaintext, cancellationToken);
        if (filled == 0)
        {
            throw ApiException.BadRequest("empty_file", "The file is empty.");
        }

        var mediaId = Guid.CreateVersion7();
        var name = mediaId.ToString("N");
        // Spread over 256 directories (or key prefixes) by the random tail of the id.
        var storageKey = $"{name[^2..]}/{name}";
        var (sealer, wrappedKey) = mediaCipher.CreateKey(mediaId);
        long size = 0;
        try
        {
            using (sealer)
            {
                await store.WriteAsync(storageKey, async (destination, token) =>
                {
                    var sealedChunk = new byte[MediaCipher.SealedChunkSize];
                    for (long index = 0; filled > 0; index++)
                    {
                        size += filled;
                        if (size > options.Value.MaxUploadBytes)
                        {
                            throw new ApiException(StatusCodes.Status413PayloadTooLarge, "payload_too_large",
                                $"The file is larger than {options.Value.MaxUploadBytes} bytes.");
                        }
                        sealer.Seal(index, plaintext.AsSpan(0, filled), sealedChunk);
                        await destination.WriteAsync(sealedChunk.AsMemory(0, filled + MediaCipher.TagSize), token);
                        // A short chunk means the part ended.
                        filled = filled < MediaCipher.ChunkSize ? 0 : await ReadChunkAsync(body, plaintext, token);
                    }
                }, cancellationToken);
            }
        }
        catch
        {
            // The store leaves nothing behind on failure, but an upload that failed late (a lost response) may have landed.
            await DiscardAsync(storageKey);
            throw;
        }
        return new StoredFile(mediaId, storageKey, kind, contentType, size, fileName, wrappedKey);
    }

    private string AcceptedContentType(string? header, bool audioOnly)
    {
        if (header is not null)
        {
            RequestText.Require(header, "the file's Content-Type");
        }
        if (!MediaTypeHeaderValue.TryParse(header ?? DefaultContentType, out var parsed) ||
            parsed.MediaType.Value is not { } mediaType || !mediaType.Contains('/') || parsed.ToString().Length > MaxContentTypeLength)
        {
            throw UnsupportedMediaType($"The file's Content-Type '{header}' is not a valid media type.");
        }
        mediaType = mediaType.ToLowerInvariant();
        if (audioOnly && !mediaType.StartsWith("audio/", StringComparison.Ordinal))
        {
            throw UnsupportedMediaType($"This endpoint takes audio/* files, not {mediaType}.");
        }
        if (!options.Value.Allows(mediaType))
        {
            throw UnsupportedMediaType($"Files of type {mediaType} are not accepted.");
        }
        parsed.MediaType = mediaType;
        return parsed.ToString();
    }

    private async Task<string?> ReadCaptionAsync(MultipartSection section, CancellationToken cancellationToken)
    {
        var max = messageOptions.Value.MaxContentBytes;
        var caption = await ReadTextAsync(section, "caption", max, "caption_too_long", $"caption is longer than {max} bytes.", cancellationToken);
        return string.IsNullOrWhiteSpace(caption) ? null : caption;
    }

    private static Task<string> ReadFieldAsync(MultipartSection section, string field, string code, CancellationToken cancellationToken) =>
        ReadTextAsync(section, field, MaxFieldBytes, code, $"The field is longer than {MaxFieldBytes} bytes.", cancellationToken);

    private static async Task<string> ReadTextAsync(
        MultipartSection section, string field, int maxBytes, string code, string tooLong, CancellationToken cancellationToken)
    {
        var buffer = new byte[maxBytes + 1];
        var read = await FromBody(() => section.Body.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).AsTask());
        if (read > maxBytes)
        {
            throw ApiException.BadRequest(code, tooLong);
        }
        string text;
        try
        {
            text = StrictUtf8.GetString(buffer, 0, read);
        }
        catch (DecoderFallbackException)
        {
            throw ApiException.BadRequest(code, "The field is not valid UTF-8 text.");
        }
        return RequestText.Require(text, field);
    }

    private static Task<int> ReadChunkAsync(Stream body, byte[] chunk, CancellationToken cancellationToken) =>
        FromBody(() => body.ReadAtLeastAsync(chunk, chunk.Length, throwOnEndOfStream: false, cancellationToken).AsTask());

    /// <summary>
    /// A multipart body that breaks off or is malformed is the client's mistake, not a fault. Kestrel's own
    /// errors (size limit, truncated body) already carry their status and pass through.
    /// </summary>
    private static async Task<T> FromBody<T>(Func<Task<T>> read)
    {
        try
        {
            return await read();
        }
        catch (IOException ex) when (ex is not BadHttpRequestException)
        {
            throw ApiException.BadRequest("malformed_multipart", "The multipart body is malformed or incomplete.");
        }
    }

    private async Task DiscardAsync(string storageKey)
    {
        try
        {
            await store.DeleteAsync(storageKey, CancellationToken.None);
        }
        catch (Exception ex)
        {
            // Its key was never committed, so what remains is unreadable ciphertext; only space is lost.
            logger.LogWarning(ex, "Could not delete uncommitted media object {StorageKey}", storageKey);
        }
    }

    private static string MultipartBoundary(HttpRequest request)
    {
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var type) ||
            !type.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
        {
            throw UnsupportedMediaType("Upload the file as multipart/form-data with a 'file' part.", "multipart_required");
        }
        var boundary = HeaderUtilities.RemoveQuotes(type.Boundary).Value;
        return string.IsNullOrWhiteSpace(boundary) || boundary.Length > MaxBoundaryLength
            ? throw ApiException.BadRequest("malformed_multipart", "The multipart boundary is missing or too long.")
            : boundary;
    }

    /// <summary>The name the client gave, without any directory part or control characters; null if none is left.</summary>
    private static string? SafeFileName(ContentDispositionHeaderValue disposition)
    {
        var raw = disposition.FileNameStar.HasValue ? disposition.FileNameStar.Value : HeaderUtilities.RemoveQuotes(disposition.FileName).Value;
        if (raw is null)
        {
            return null;
        }
        RequestText.Require(raw, "the file name");
        var name = new string(raw[(raw.LastIndexOfAny(['/', '\\']) + 1)..].Where(c => !char.IsControl(c)).ToArray()).Trim();
        // Refused rather than cut, as a caption is: a cut name can lose its extension, or become another file's name.
        if (name.Length > MaxFileNameLength)
        {
            throw ApiException.BadRequest("file_name_too_long", $"The file name is longer than {MaxFileNameLength} characters.");
        }
        return name.Length == 0 ? null : name;
    }

    private static ApiException UnsupportedMediaType(string detail, string code = "unsupported_media_type") =>
        new(StatusCodes.Status415UnsupportedMediaType, code, detail);

    private sealed class UploadForm
    {
        public string? Caption { get; set; }
        public int? DurationMs { get; set; }
        public string? ClientMessageId { get; set; }
        public Guid? ReplyTo { get; set; }
    }

    private sealed record StoredFile(Guid MediaId, string StorageKey, string Kind, string ContentType, long SizeBytes, string? FileName, byte[] WrappedKey);
}
