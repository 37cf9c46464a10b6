using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace RealtimeChat.Messages;

/// <summary>What a reaction may be: visible text or emoji, including ZWJ sequences, skin tones, keycaps and flags.</summary>
internal static class ReactionText
{
    private enum Previous
    {
        Start,
        Visible,
        Joiner,
        Selector,
        Tag,
    }

    /// <summary>
    /// False for invisible or direction-changing text: bidi controls (U+202A–202E, U+2066–2069, U+200E/F, U+061C)
    /// would reorder the text around the reaction wherever it is shown, and a joiner or variation selector with
    /// nothing to join or select renders as nothing, making reactions that look empty or identical to others.
    /// </summary>
    public static bool IsAcceptable(string reaction, int maxLength)
    {
        if (string.IsNullOrWhiteSpace(reaction) || reaction.Length > maxLength)
        {
            return false;
        }
        var previous = Previous.Start;
        for (var index = 0; index < reaction.Length;)
        {
            if (Rune.DecodeFromUtf16(reaction.AsSpan(index), out var rune, out var consumed) != OperationStatus.Done)
            {
                return false;
            }
            index += consumed;
            var value = rune.Value;
            if (value == 0x200D)
            {
                // A zero-width joiner joins two emoji (👨‍👩‍👧, ❤️‍🔥): something before it, and never two in a row.
                if (previous is not (Previous.Visible or Previous.Selector))
                {
                    return false;
                }
                previous = Previous.Joiner;
            }
            else if (value is (>= 0xFE00 and <= 0xFE0F) or (>= 0xE0100 and <= 0xE01EF))
            {
                // A variation selector picks the presentation of the character right before it.
                if (previous != Previous.Visible)
                {
                    return false;
                }
                previous = Previous.Selector;
            }
            else if (value is >= 0xE0020 and <= 0xE007F)
            {
                // Tag characters spell subdivision flags (🏴 + tags); they follow the flag or each other.
                if (previous is not (Previous.Visible or Previous.Tag))
                {
                    return false;
                }
                previous = Previous.Tag;
            }
            else if (Rune.IsControl(rune) || Rune.GetUnicodeCategory(rune) == UnicodeCategory.Format)
            {
                // Format characters are the invisible ones: bidi controls and marks, zero-width spaces, soft hyphens.
                return false;
            }
            else
            {
                previous = Previous.Visible;
            }
        }
        return previous != Previous.Joiner;
    }

    /// <summary>
    /// The reaction path segment decoded exactly once. Kestrel decodes the path except <c>%2F</c>, which stays
    /// encoded in route values, so "¯\_(ツ)_/¯" would otherwise be stored as "¯\_(ツ)_%2F¯".
    /// </summary>
    public static string FromPath(HttpContext context, string routeValue)
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (string.IsNullOrEmpty(raw))
        {
            return routeValue;
        }
        var end = raw.IndexOfAny(['?', '#']);
        var path = end >= 0 ? raw[..end] : raw;
        return Uri.UnescapeDataString(path[(path.LastIndexOf('/') + 1)..]);
    }
}
