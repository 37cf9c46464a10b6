using System.Net;
using Dapper;
using Microsoft.Extensions.DependencyInjection;
using RealtimeChat.Storage;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Validation;

/// <summary>
/// Which reactions are stored, sent as a client would send them. Paths go out byte for byte as written here:
/// HttpClient would otherwise remove dot segments before sending, and the server must cope with clients that do not.
/// </summary>
public sealed class ReactionTextTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    public static TheoryData<string> Accepted => new()
    {
        "👍",
        "👍🏽",                                  // skin tone
        "👨\u200D👩\u200D👧",                      // ZWJ family
        "❤\uFE0F\u200D🔥",                       // heart on fire: VS16 then ZWJ
        "1\uFE0F\u20E3",                         // keycap: digit, VS16, enclosing keycap mark
        "🇫🇷",                                   // regional indicators
        "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F", // Scotland: black flag, tags, cancel tag
        "好的",                                  // CJK text
        "e\u0301",                               // é written with a combining acute
        "e\u0323\u0302",                         // Vietnamese ệ, decomposed
        "a\u0301\u0302\u0303\u0304",             // four marks on one base: the most allowed
        "葛\U000E0100",                           // an ideographic variation sequence (VS17 after a CJK ideograph)
        "क्\u200Dष",                             // Devanagari half form: ZWJ after a virama
    };

    [Theory]
    [MemberData(nameof(Accepted))]
    public async Task Emoji_and_text_are_stored_as_sent_and_removed_the_same_way(string reaction)
    {
        var (url, client) = await MessageAsync();
        var path = $"{url}/reactions/{Uri.EscapeDataString(reaction)}";
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(Raw(path), null)).StatusCode);
        Assert.Equal([reaction], await ReactionsAsync(client, url));
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync(Raw(path))).StatusCode);
        Assert.Empty(await ReactionsAsync(client, url));
    }

    public static TheoryData<string> LookAlikes => new()
    {
        "👍\U000E0020",                          // a tag after something other than the black flag
        "🏴\U000E0067\U000E0062",                // a tag sequence without its cancel tag
        "🏴\U000E007F",                          // a cancel tag with no tag before it
        "\U000E0067🏴",                          // a tag first
        "👍\U000E0100",                          // VS17 after an emoji
        "a\U000E01EF",                           // VS256 after a Latin letter
    };

    public static TheoryData<string> Blank => new()
    {
        "\u3164",                                // Hangul filler
        "\u115F",                                // Hangul choseong filler
        "\u1160",                                // Hangul jungseong filler
        "\uFFA0",                                // halfwidth Hangul filler
        "\u2800",                                // braille blank
        "\u17B4",                                // Khmer inherent vowels
        "\u17B5",
        "👍\u3164",                              // a blank after something visible still looks like another reaction
        "\u034F👍",                              // combining grapheme joiner
    };

    public static TheoryData<string> Malformed => new()
    {
        "\u0301",                                // a lone combining mark
        "\u0301a",                               // a mark with nothing before it
        "a" + new string('\u0301', 5),           // past the four marks a base may carry
        "a" + new string('\u0301', 40),
        "\u200D\u0301",                          // a mark after a joiner
        "a\u2028",                               // line separator
        "a\u2029b",                              // paragraph separator
        "\uFDD0",                                // noncharacters
        "a\uFDEF",
        "\uFFFE",
        "\U0003FFFF",
        "\U0010FFFF",
        "\uE000",                                // private use
        "a\uF8FF",
        "\U000F0000",
    };

    [Theory]
    [MemberData(nameof(LookAlikes))]
    [MemberData(nameof(Blank))]
    [MemberData(nameof(Malformed))]
    public async Task Look_alike_blank_or_malformed_reactions_are_refused(string reaction)
    {
        var (url, client) = await MessageAsync();
        var path = $"{url}/reactions/{Uri.EscapeDataString(reaction)}";
        await (await client.PutAsync(Raw(path), null)).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        await (await client.DeleteAsync(Raw(path))).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        Assert.Empty(await ReactionsAsync(client, url));
    }

    [Fact]
    public async Task A_refused_reaction_stored_by_an_earlier_version_can_still_be_removed()
    {
        var userId = Guid.NewGuid();
        var (url, client) = await MessageAsync(userId);
        var messageId = Guid.Parse(url[(url.LastIndexOf('/') + 1)..]);
        const string legacy = "👍\U000E0020";
        await using (var connection = await _server.Services.GetRequiredService<ChatDatabase>().OpenAsync())
        {
            await connection.ExecuteAsync(
                "INSERT INTO message_reactions (message_id, user_id, reaction, created_at) VALUES (@messageId, @userId, @legacy, @now)",
                new { messageId, userId, legacy, now = DateTimeOffset.UtcNow });
        }
        Assert.Equal([legacy], await ReactionsAsync(client, url));

        var path = $"{url}/reactions/{Uri.EscapeDataString(legacy)}";
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync(Raw(path))).StatusCode);
        Assert.Empty(await ReactionsAsync(client, url));
        await (await client.DeleteAsync(Raw(path))).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
    }

    [Theory]
    [InlineData("%F0%9F%91%8D/.")]
    [InlineData("%F0%9F%91%8D/%2E")]
    [InlineData("%F0%9F%91%8D/x/..")]
    [InlineData("%E2%80%AE/x/..")]
    [InlineData("%E2%80%AE/x/%2E%2E")]
    [InlineData("%F0%9F%91%8D/")]
    public async Task A_path_whose_last_segment_is_not_the_reaction_it_routes_to_is_refused(string segments)
    {
        var (url, client) = await MessageAsync();
        await (await client.PutAsync(Raw($"{url}/reactions/{segments}"), null)).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        Assert.Empty(await ReactionsAsync(client, url));

        // Written the same way, a removal must not reach another reaction of the caller's.
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(Raw($"{url}/reactions/%F0%9F%91%8D"), null)).StatusCode);
        await (await client.DeleteAsync(Raw($"{url}/reactions/{segments}"))).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        Assert.Equal(["👍"], await ReactionsAsync(client, url));
    }

    [Fact]
    public async Task Dot_segments_before_the_reaction_route_and_store_the_same_reaction()
    {
        var (url, client) = await MessageAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(Raw($"{url}/x/../reactions/%F0%9F%91%8D"), null)).StatusCode);
        Assert.Equal(["👍"], await ReactionsAsync(client, url));
    }

    [Theory]
    [InlineData("%FF")]                          // not UTF-8
    [InlineData("%C0%AF")]                       // overlong "/"
    [InlineData("%ED%A0%80")]                    // a UTF-16 surrogate
    [InlineData("%F0%9F%91")]                    // a truncated emoji
    [InlineData("a%F0%9F%91%8Db%80")]            // a stray continuation byte after valid text
    [InlineData("%")]                            // escapes that are not two hex digits
    [InlineData("%4")]
    [InlineData("%G0")]
    [InlineData("100%")]
    public async Task A_segment_that_is_not_percent_encoded_UTF_8_is_refused(string segment)
    {
        var (url, client) = await MessageAsync();
        await (await client.PutAsync(Raw($"{url}/reactions/{segment}"), null)).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        await (await client.DeleteAsync(Raw($"{url}/reactions/{segment}"))).ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        Assert.Empty(await ReactionsAsync(client, url));
    }

    [Theory]
    [InlineData("%2525", "%25")]                 // decoded once: what remains is text
    [InlineData("%252F", "%2F")]
    [InlineData("a%2Fb", "a/b")]                 // "/" inside a reaction
    [InlineData("a%2fb", "a/b")]
    [InlineData("%C2%AF%5C_(%E3%83%84)_%2F%C2%AF", @"¯\_(ツ)_/¯")]
    public async Task A_segment_is_decoded_exactly_once(string segment, string stored)
    {
        var (url, client) = await MessageAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(Raw($"{url}/reactions/{segment}"), null)).StatusCode);
        Assert.Equal([stored], await ReactionsAsync(client, url));
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync(Raw($"{url}/reactions/{segment}"))).StatusCode);
        Assert.Empty(await ReactionsAsync(client, url));
    }

    /// <summary>The path exactly as written, on this server (no dot-segment removal or re-escaping by the client).</summary>
    private Uri Raw(string path) =>
        new($"{_server.BaseAddress.GetLeftPart(UriPartial.Authority)}{path}", new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true });

    private static async Task<List<string?>> ReactionsAsync(HttpClient client, string url) =>
        (await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray().Select(r => r.GetProperty("reaction").GetString()).ToList();

    private async Task<(string Url, HttpClient Client)> MessageAsync(Guid? userId = null)
    {
        var client = _server.Client(userId ?? Guid.NewGuid());
        var id = await client.CreateGroupAsync("reactions");
        var message = (await client.SendAsync(id, "react")).GetProperty("id").GetGuid();
        return ($"/api/v1/conversations/{id}/messages/{message}", client);
    }
}
