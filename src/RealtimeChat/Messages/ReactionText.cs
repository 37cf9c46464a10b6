using System.Buffers;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Unicode;
using Microsoft.AspNetCore.Http.Features;
using RealtimeChat.Infrastructure;

namespace RealtimeChat.Messages;

/// <summary>What a reaction may be: visible text or emoji, including ZWJ sequences, skin tones, keycaps and flags.</summary>
internal static class ReactionText
{
    /// <summary>Combining marks one base character may carry; real text needs at most four (Hebrew with points and
    /// cantillation; Vietnamese needs two), while dozens stack into "Zalgo" text that spills over the messages around it.</summary>
    public const int MaxMarksPerBase = 4;

    private const int BlackFlag = 0x1F3F4;
    private const int CancelTag = 0xE007F;

    private enum Previous
    {
        Start,
        Base,
        Mark,
        Selector,
        Joiner,
        Tag,
    }

    /// <summary>
    /// False for text that is invisible, changes direction, or looks like another reaction: bidi controls
    /// (U+202A–202E, U+2066–2069, U+200E/F, U+061C) would reorder the text around the reaction wherever it is shown;
    /// characters that render as nothing (default ignorables, Hangul fillers, the braille blank) and joiners,
    /// selectors, tags or marks with nothing to attach to make reactions that look empty or identical to others;
    /// noncharacters and private use characters mean nothing to another user's device.
    /// </summary>
    public static bool IsAcceptable(string reaction, int maxLength)
    {
        if (string.IsNullOrWhiteSpace(reaction) || reaction.Length > maxLength)
        {
            return false;
        }
        var previous = Previous.Start;
        var lastBase = 0;
        var marks = 0;
        for (var index = 0; index < reaction.Length;)
        {
            if (Rune.DecodeFromUtf16(reaction.AsSpan(index), out var rune, out var consumed) != OperationStatus.Done)
            {
                return false;
            }
            index += consumed;
            var value = rune.Value;
            if (previous == Previous.Tag && value is not (>= 0xE0020 and <= 0xE007F))
            {
                // Without its cancel tag a tag sequence is not a flag, and its tags render as nothing.
                return false;
            }
            if (value == 0x200D)
            {
                // A zero-width joiner joins two emoji (👨‍👩‍👧, ❤️‍🔥) or shapes a conjunct after a virama (क्‍ष):
                // something before it, and never two in a row.
                if (previous is not (Previous.Base or Previous.Mark or Previous.Selector))
                {
                    return false;
                }
                previous = Previous.Joiner;
            }
            else if (value is (>= 0xFE00 and <= 0xFE0F) or (>= 0x180B and <= 0x180D) or 0x180F)
            {
                // A variation selector (or a Mongolian one) picks the presentation of the character right before it.
                if (previous != Previous.Base)
                {
                    return false;
                }
                previous = Previous.Selector;
            }
            else if (value is >= 0xE0100 and <= 0xE01EF)
            {
                // VS17–VS256 are only defined for CJK ideographs (ideographic variation sequences); after anything
                // else they are invisible, so 👍 + VS17 would look exactly like 👍.
                if (previous != Previous.Base || !IsCjkIdeograph(lastBase))
                {
                    return false;
                }
                previous = Previous.Selector;
            }
            else if (value is >= 0xE0020 and <= 0xE007E)
            {
                // Tags spell subdivision flags (🏴 + tags + cancel tag, 🏴󠁧󠁢󠁳󠁣󠁴󠁿); anywhere else they are invisible.
                if (!(previous == Previous.Tag || (previous == Previous.Base && lastBase == BlackFlag)))
                {
                    return false;
                }
                previous = Previous.Tag;
            }
            else if (value == CancelTag)
            {
                if (previous != Previous.Tag)
                {
                    return false;
                }
                (previous, lastBase, marks) = (Previous.Base, value, 0);
            }
            else if (RendersAsNothingOrNoSymbol(rune))
            {
                return false;
            }
            else if (Rune.GetUnicodeCategory(rune) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark)
            {
                // A mark draws on the character before it (é as e + U+0301, the keycap in 1️⃣); alone it draws on
                // nothing, or on whatever the reaction is shown next to.
                if (previous is not (Previous.Base or Previous.Mark or Previous.Selector) || ++marks > MaxMarksPerBase)
                {
                    return false;
                }
                previous = Previous.Mark;
            }
            else
            {
                (previous, lastBase, marks) = (Previous.Base, value, 0);
            }
        }
        return previous is Previous.Base or Previous.Mark or Previous.Selector;
    }

    private static bool RendersAsNothingOrNoSymbol(Rune rune)
    {
        var value = rune.Value;
        return Rune.GetUnicodeCategory(rune) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator
                   or UnicodeCategory.ParagraphSeparator or UnicodeCategory.PrivateUse
               // Noncharacters: reserved for a program's internal use, never for interchange.
               || value is >= 0xFDD0 and <= 0xFDEF
               || (value & 0xFFFE) == 0xFFFE
               // Default ignorable code points outside the format category: fonts draw them as nothing. Hangul fillers,
               // Khmer inherent vowels, the combining grapheme joiner, and ranges reserved as ignorable for the future.
               || value is 0x034F or 0x115F or 0x1160 or 0x17B4 or 0x17B5 or 0x3164 or 0xFFA0 or 0x2065
                   or (>= 0xFFF0 and <= 0xFFF8) or (>= 0xE0000 and <= 0xE0FFF)
               // Not ignorable, but drawn as an empty cell.
               || value == 0x2800;
    }

    private static bool IsCjkIdeograph(int value) =>
        value is (>= 0x3400 and <= 0x4DBF) or (>= 0x4E00 and <= 0x9FFF) or (>= 0xF900 and <= 0xFAFF) or (>= 0x20000 and <= 0x3FFFD);

    /// <summary>
    /// The reaction path segment decoded exactly once. Kestrel decodes the path except <c>%2F</c>, which stays
    /// encoded in route values, so "¯\_(ツ)_/¯" would otherwise be stored as "¯\_(ツ)_%2F¯"; hence the raw segment.
    /// </summary>
    /// <exception cref="ApiException"><c>invalid_reaction</c>: the segment is not percent-encoded UTF-8, or it is not
    /// the segment the route matched.</exception>
    public static string FromPath(HttpContext context, string routeValue)
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (string.IsNullOrEmpty(raw))
        {
            return routeValue;
        }
        var end = raw.IndexOfAny(['?', '#']);
        var path = end >= 0 ? raw[..end] : raw;
        var segment = path[(path.LastIndexOf('/') + 1)..];
        if (!TryDecode(segment, out var reaction, out var asRouted))
        {
            throw ApiException.BadRequest("invalid_reaction", "The reaction segment is not percent-encoded UTF-8.");
        }
        // The router matched the path after removing dot segments ("👍/." routes as "👍"), the raw target has them:
        // storing or deleting its last segment would act on a reaction other than the one routed to.
        if (asRouted != routeValue)
        {
            throw ApiException.BadRequest("invalid_reaction", "The reaction must be the path's last segment (no \".\" or \"..\" segments after it).");
        }
        return reaction;
    }

    /// <summary>
    /// Strict percent-decoding: every escape is two hex digits and the bytes are UTF-8 (no overlong forms, no
    /// surrogates). Lenient decoders leave bad escapes as text, storing "%FF" for a segment that meant no text at all.
    /// </summary>
    /// <param name="asRouted">The segment as Kestrel decodes paths, <c>%2F</c> left encoded: what routing saw.</param>
    private static bool TryDecode(string segment, out string decoded, out string asRouted)
    {
        (decoded, asRouted) = (string.Empty, string.Empty);
        var bytes = new List<byte>(segment.Length);
        var routed = new List<byte>(segment.Length);
        for (var index = 0; index < segment.Length; index++)
        {
            var c = segment[index];
            // A request target is ASCII (Kestrel refuses others before this); text beyond it arrives percent-encoded.
            if (c > 0x7F)
            {
                return false;
            }
            if (c != '%')
            {
                bytes.Add((byte)c);
                routed.Add((byte)c);
                continue;
            }
            if (index + 2 >= segment.Length
                || !byte.TryParse(segment.AsSpan(index + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b))
            {
                return false;
            }
            bytes.Add(b);
            if (b == '/')
            {
                routed.AddRange([(byte)'%', (byte)segment[index + 1], (byte)segment[index + 2]]);
            }
            else
            {
                routed.Add(b);
            }
            index += 2;
        }
        if (!Utf8.IsValid(CollectionsMarshal.AsSpan(bytes)))
        {
            return false;
        }
        decoded = Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(bytes));
        asRouted = Encoding.UTF8.GetString(CollectionsMarshal.AsSpan(routed));
        return true;
    }
}
