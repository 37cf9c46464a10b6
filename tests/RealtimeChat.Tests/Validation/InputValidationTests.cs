using System.Net;
using System.Text;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Validation;

public sealed class InputValidationTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    [Theory]
    [InlineData("{\"role\":99}")]
    [InlineData("{\"role\":\"99\"}")]
    [InlineData("{\"role\":1}")]
    [InlineData("{\"role\":\"superuser\"}")]
    [InlineData("{\"role\":\"2\"}")]
    public async Task A_role_must_be_one_of_the_defined_names(string body)
    {
        var (owner, member) = (Guid.NewGuid(), Guid.NewGuid());
        var client = _server.Client(owner);
        var id = await client.CreateGroupAsync("roles", member);
        await using var socket = await _server.ConnectAsync(owner);

        var response = await client.PatchAsync($"/api/v1/conversations/{id}/members/{member}", new StringContent(body, Encoding.UTF8, "application/json"));
        var problem = await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_enum_value");
        Assert.Contains("member, admin, owner", problem.GetProperty("detail").GetString());

        var added = await client.PostAsync($"/api/v1/conversations/{id}/members",
            new StringContent($"{{\"user_id\":\"{Guid.NewGuid()}\",{body[1..]}", Encoding.UTF8, "application/json"));
        await added.ProblemAsync(HttpStatusCode.BadRequest, "invalid_enum_value");

        // Nothing changed, nothing was published.
        Assert.DoesNotContain(await socket.CollectAsync(TimeSpan.FromMilliseconds(300)), f => f.Type.StartsWith("member.", StringComparison.Ordinal));
        var members = (await client.GetJsonAsync($"/api/v1/conversations/{id}/members")).EnumerateArray().ToList();
        Assert.Equal(2, members.Count);
        Assert.Equal("member", members.Single(m => m.GetProperty("user_id").GetGuid() == member).GetProperty("role").GetString());
    }

    [Fact]
    public async Task Kinds_accept_only_their_names_and_names_still_work()
    {
        var client = _server.Client(Guid.NewGuid());
        await (await client.PostAsync("/api/v1/conversations", new StringContent("{\"kind\":1,\"name\":\"n\"}", Encoding.UTF8, "application/json")))
            .ProblemAsync(HttpStatusCode.BadRequest, "invalid_enum_value");
        await (await client.PostAsync("/api/v1/conversations", new StringContent("{\"kind\":\"Group\",\"name\":\"n\"}", Encoding.UTF8, "application/json")))
            .JsonAsync(HttpStatusCode.Created);

        var (owner, other) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("named roles", other);
        var promoted = await _server.Client(owner).PatchJsonAsync($"/api/v1/conversations/{id}/members/{other}", new { role = "admin" });
        Assert.Equal(HttpStatusCode.NoContent, promoted.StatusCode);
    }

    [Theory]
    [InlineData("👍")]
    [InlineData("❤️")]                 // heart + VS16
    [InlineData("👍🏽")]                // skin tone
    [InlineData("👨‍👩‍👧‍👦")]            // ZWJ family
    [InlineData("❤️‍🔥")]               // VS16 then ZWJ
    [InlineData("🧑🏿‍🚀")]              // skin tone then ZWJ
    [InlineData("🇫🇷")]                // flag (regional indicators)
    [InlineData("🏴󠁧󠁢󠁳󠁣󠁴󠁿")]           // subdivision flag (tag characters)
    [InlineData("1️⃣")]                // keycap
    [InlineData("+1")]
    [InlineData(":party:")]
    public async Task Real_emoji_sequences_are_accepted_and_stored_as_sent(string reaction)
    {
        var (url, client) = await MessageAsync();
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync($"{url}/reactions/{Uri.EscapeDataString(reaction)}", null)).StatusCode);
        var stored = (await client.GetJsonAsync(url)).GetProperty("reactions");
        Assert.Equal(reaction, stored[0].GetProperty("reaction").GetString());
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"{url}/reactions/{Uri.EscapeDataString(reaction)}")).StatusCode);
        Assert.Empty((await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray());
    }

    [Theory]
    [InlineData("\u202Eevil")]          // right-to-left override
    [InlineData("👍\u202A")]
    [InlineData("a\u202Cb")]
    [InlineData("\u2066👍\u2069")]      // isolates
    [InlineData("👍\u200E")]            // LRM
    [InlineData("\u200F👍")]            // RLM
    [InlineData("\u200D")]              // lone ZWJ
    [InlineData("👍\u200D")]            // trailing ZWJ
    [InlineData("\u200D👍")]            // leading ZWJ
    [InlineData("👨\u200D\u200D👩")]     // doubled ZWJ
    [InlineData("\uFE0F")]              // lone variation selector
    [InlineData("\uFE0F👍")]            // leading variation selector
    [InlineData("\u200B")]              // zero width space
    [InlineData(" ")]
    public async Task Bidi_controls_and_lone_joiners_or_selectors_are_refused(string reaction)
    {
        var (url, client) = await MessageAsync();
        var response = await client.PutAsync($"{url}/reactions/{Uri.EscapeDataString(reaction)}", null);
        await response.ProblemAsync(HttpStatusCode.BadRequest, "invalid_reaction");
        Assert.Empty((await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray());
    }

    [Fact]
    public async Task A_percent_encoded_reaction_segment_is_decoded_once_before_storing()
    {
        var (url, client) = await MessageAsync();
        // Sent as the client library encodes it; HttpClient must not re-encode the escapes.
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(new Uri($"{url}/reactions/%F0%9F%91%8D", UriKind.Relative), null)).StatusCode);
        var stored = (await client.GetJsonAsync(url)).GetProperty("reactions");
        Assert.Equal("👍", stored[0].GetProperty("reaction").GetString());

        // "/" arrives as %2F, which the server's path decoding leaves encoded.
        var shrug = @"¯\_(ツ)_/¯";
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync($"{url}/reactions/{Uri.EscapeDataString(shrug)}", null)).StatusCode);
        Assert.Contains(shrug, (await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray().Select(r => r.GetProperty("reaction").GetString()));
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"{url}/reactions/{Uri.EscapeDataString(shrug)}")).StatusCode);
        Assert.DoesNotContain(shrug, (await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray().Select(r => r.GetProperty("reaction").GetString()));

        // Encoded twice: decoded once, the remaining escapes are not an emoji but literal text, and that is what is kept.
        Assert.Equal(HttpStatusCode.NoContent, (await client.PutAsync(new Uri($"{url}/reactions/%253Aok%253A", UriKind.Relative), null)).StatusCode);
        var reactions = (await client.GetJsonAsync(url)).GetProperty("reactions").EnumerateArray().Select(r => r.GetProperty("reaction").GetString()).ToList();
        Assert.Contains("%3Aok%3A", reactions);
    }

    private async Task<(string Url, HttpClient Client)> MessageAsync()
    {
        var alice = Guid.NewGuid();
        var client = _server.Client(alice);
        var id = await client.CreateGroupAsync("reactions");
        var message = (await client.SendAsync(id, "react")).GetProperty("id").GetGuid();
        return ($"/api/v1/conversations/{id}/messages/{message}", client);
    }
}
