using System.Net.Http.Json;
using System.Net;
using System.Text.Json;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Messages;

public sealed class MessageTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    private async Task<(Guid Conversation, HttpClient Alice, HttpClient Bob, Guid AliceId, Guid BobId)> PairAsync()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = _server.Client(alice);
        var id = await aliceClient.CreateGroupAsync("pair", bob);
        return (id, aliceClient, _server.Client(bob), alice, bob);
    }

    [Fact]
    public async Task Sent_message_is_returned_and_listed_with_increasing_seq()
    {
        var (id, alice, bob, aliceId, _) = await PairAsync();
        var first = await alice.SendAsync(id, "hello");
        var second = await bob.SendAsync(id, "hi back");

        Assert.Equal("hello", first.GetProperty("content").GetString());
        Assert.Equal(aliceId, first.GetProperty("sender_id").GetGuid());
        Assert.Equal("text", first.GetProperty("type").GetString());
        Assert.True(second.GetProperty("seq").GetInt64() > first.GetProperty("seq").GetInt64());

        var page = await bob.GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Equal(["hello", "hi back"], page.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString()));
        Assert.False(page.GetProperty("has_more").GetBoolean());
    }

    [Fact]
    public async Task Client_message_id_makes_retries_idempotent()
    {
        var (id, alice, _, _, _) = await PairAsync();
        var original = await alice.SendAsync(id, "once", "retry-1");
        var retry = await (await alice.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = "once", client_message_id = "retry-1" }))
            .JsonAsync(HttpStatusCode.OK);

        Assert.Equal(original.GetProperty("id").GetGuid(), retry.GetProperty("id").GetGuid());
        var page = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Single(page.GetProperty("messages").EnumerateArray());
    }

    [Fact]
    public async Task Concurrent_retries_with_one_client_message_id_store_one_message()
    {
        var (id, alice, _, _, _) = await PairAsync();
        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ =>
            alice.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = "burst", client_message_id = "same" })));

        Assert.All(responses, r => Assert.True(r.StatusCode is HttpStatusCode.Created or HttpStatusCode.OK, r.StatusCode.ToString()));
        Assert.Single(responses, r => r.StatusCode == HttpStatusCode.Created);
        var ids = await Task.WhenAll(responses.Select(async r => (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid()));
        Assert.Single(ids.Distinct());
        var page = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Single(page.GetProperty("messages").EnumerateArray());
    }

    [Fact]
    public async Task Concurrent_sends_to_several_conversations_get_gapless_seqs_delivered_in_order_and_answered_as_stored()
    {
        var owner = Guid.NewGuid();
        var members = Enumerable.Range(0, 5).Select(_ => Guid.NewGuid()).ToArray();
        var ownerClient = _server.Client(owner);
        var conversations = new[]
        {
            await ownerClient.CreateGroupAsync("burst a", members),
            await ownerClient.CreateGroupAsync("burst b", members),
            await ownerClient.CreateGroupAsync("burst c", members),
        };
        await using var watcher = await _server.ConnectAsync(owner);
        var outsider = _server.Client(Guid.NewGuid());

        // Sends arriving together are stored together: members' sends and an outsider's refused ones share batches.
        const int perMemberAndConversation = 8;
        // Each member sends to each conversation one message after another; all of those streams run at once.
        var memberSends = members
            .SelectMany(member => conversations.Select(async conversation =>
            {
                var client = _server.Client(member);
                var answers = new List<(Guid Conversation, JsonElement Message)>();
                for (var n = 0; n < perMemberAndConversation; n++)
                {
                    answers.Add((conversation, await client.SendAsync(conversation, $"{member:N}/{n}")));
                }
                return answers;
            }))
            .ToList();
        var outsiderSends = Enumerable.Range(0, 10)
            .Select(n => outsider.PostJsonAsync($"/api/v1/conversations/{conversations[n % 3]}/messages", new { content = "let me in" }))
            .ToList();
        var sent = (await Task.WhenAll(memberSends)).SelectMany(answers => answers).ToArray();
        foreach (var refused in await Task.WhenAll(outsiderSends))
        {
            await refused.ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        }

        foreach (var conversation in conversations)
        {
            var answers = sent.Where(s => s.Conversation == conversation).Select(s => s.Message).OrderBy(m => m.GetProperty("seq").GetInt64()).ToList();
            var seqs = answers.Select(m => m.GetProperty("seq").GetInt64()).ToList();
            Assert.Equal(Enumerable.Range((int)seqs[0], members.Length * perMemberAndConversation).Select(n => (long)n), seqs);

            // Each member's sends keep the order in which that member made them.
            foreach (var member in members)
            {
                var mine = answers.Where(m => m.GetProperty("sender_id").GetGuid() == member).Select(m => m.GetProperty("content").GetString());
                Assert.Equal(Enumerable.Range(0, perMemberAndConversation).Select(n => $"{member:N}/{n}"), mine);
            }

            var page = await ownerClient.GetJsonAsync($"/api/v1/conversations/{conversation}/messages?limit=100");
            Assert.Equal(answers.Select(m => m.GetRawText()), page.GetProperty("messages").EnumerateArray().Select(m => m.GetRawText()));
        }

        var live = new List<LiveFrame>();
        while (live.Count < sent.Length)
        {
            live.Add(await watcher.WaitForAsync(f => f.Type == "message.new"));
        }
        foreach (var conversation in conversations)
        {
            var frames = live.Where(f => f.ConversationId == conversation).ToList();
            Assert.Equal(frames.Select(f => f.Seq).Order(), frames.Select(f => f.Seq));
            Assert.Equal(
                sent.Where(s => s.Conversation == conversation).Select(s => s.Message.GetRawText()).Order(),
                frames.Select(f => f.Data.GetRawText()).Order());
        }
    }

    [Fact]
    public async Task History_pages_by_sequence_in_both_directions()
    {
        var (id, alice, _, _, _) = await PairAsync();
        var seqs = new List<long>();
        for (var i = 0; i < 7; i++)
        {
            seqs.Add((await alice.SendAsync(id, $"m{i}")).GetProperty("seq").GetInt64());
        }

        var latest = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages?limit=3");
        Assert.Equal(["m4", "m5", "m6"], Contents(latest));
        Assert.True(latest.GetProperty("has_more").GetBoolean());

        var older = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages?limit=3&before={seqs[4]}");
        Assert.Equal(["m1", "m2", "m3"], Contents(older));

        var oldest = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages?limit=3&before={seqs[1]}");
        Assert.Equal(["m0"], Contents(oldest));
        Assert.False(oldest.GetProperty("has_more").GetBoolean());

        var newer = await alice.GetJsonAsync($"/api/v1/conversations/{id}/messages?limit=4&after={seqs[2]}");
        Assert.Equal(["m3", "m4", "m5", "m6"], Contents(newer));
        Assert.False(newer.GetProperty("has_more").GetBoolean());

        await (await alice.GetAsync($"/api/v1/conversations/{id}/messages?limit=0")).ProblemAsync(HttpStatusCode.BadRequest, "invalid_limit");
        await (await alice.GetAsync($"/api/v1/conversations/{id}/messages?before=3&after=1")).ProblemAsync(HttpStatusCode.BadRequest, "invalid_cursor");
    }

    [Fact]
    public async Task Reply_must_point_into_the_same_conversation()
    {
        var (id, alice, bob, _, _) = await PairAsync();
        var original = await alice.SendAsync(id, "question?");
        var reply = await (await bob.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = "answer", reply_to = original.GetProperty("id").GetGuid() }))
            .JsonAsync(HttpStatusCode.Created);
        Assert.Equal(original.GetProperty("id").GetGuid(), reply.GetProperty("reply_to").GetGuid());

        await (await bob.PostJsonAsync($"/api/v1/conversations/{id}/messages", new { content = "answer", reply_to = Guid.NewGuid() }))
            .ProblemAsync(HttpStatusCode.BadRequest, "reply_target_not_found");
    }

    [Fact]
    public async Task Only_the_sender_edits_and_edited_at_is_kept()
    {
        var (id, alice, bob, _, _) = await PairAsync();
        var message = await alice.SendAsync(id, "tpyo");
        var url = $"/api/v1/conversations/{id}/messages/{message.GetProperty("id").GetGuid()}";

        await (await bob.PatchJsonAsync(url, new { content = "hijack" })).ProblemAsync(HttpStatusCode.Forbidden, "not_sender");
        var edited = await (await alice.PatchJsonAsync(url, new { content = "typo" })).JsonAsync(HttpStatusCode.OK);

        Assert.Equal("typo", edited.GetProperty("content").GetString());
        Assert.Equal(JsonValueKind.String, edited.GetProperty("edited_at").ValueKind);
        Assert.Equal("typo", (await bob.GetJsonAsync(url)).GetProperty("content").GetString());
    }

    [Fact]
    public async Task Delete_leaves_a_tombstone_sender_or_admin_only()
    {
        var (owner, member, other) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("moderated", member, other);
        var message = await _server.Client(member).SendAsync(id, "regrettable");
        var url = $"/api/v1/conversations/{id}/messages/{message.GetProperty("id").GetGuid()}";

        await (await _server.Client(other).DeleteAsync(url)).ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client(owner).DeleteAsync(url)).StatusCode);

        var tombstone = await _server.Client(member).GetJsonAsync(url);
        Assert.Equal(JsonValueKind.Null, tombstone.GetProperty("content").ValueKind);
        Assert.Equal(JsonValueKind.String, tombstone.GetProperty("deleted_at").ValueKind);
        await (await _server.Client(member).PatchJsonAsync(url, new { content = "undo" })).ProblemAsync(HttpStatusCode.Conflict, "message_deleted");
    }

    [Fact]
    public async Task Reactions_are_one_per_user_and_key()
    {
        var (id, alice, bob, aliceId, bobId) = await PairAsync();
        var message = await alice.SendAsync(id, "party");
        var url = $"/api/v1/conversations/{id}/messages/{message.GetProperty("id").GetGuid()}";
        var thumbs = Uri.EscapeDataString("👍");

        Assert.Equal(HttpStatusCode.NoContent, (await alice.PutAsync($"{url}/reactions/{thumbs}", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await alice.PutAsync($"{url}/reactions/{thumbs}", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await bob.PutAsync($"{url}/reactions/{thumbs}", null)).StatusCode);

        var reactions = (await alice.GetJsonAsync(url)).GetProperty("reactions");
        Assert.Equal("👍", reactions[0].GetProperty("reaction").GetString());
        Assert.Equal(2, reactions[0].GetProperty("count").GetInt32());

        Assert.Equal(HttpStatusCode.NoContent, (await alice.DeleteAsync($"{url}/reactions/{thumbs}")).StatusCode);
        reactions = (await bob.GetJsonAsync(url)).GetProperty("reactions");
        Assert.Equal([bobId], reactions[0].GetProperty("user_ids").EnumerateArray().Select(u => u.GetGuid()));
        Assert.DoesNotContain(aliceId, reactions[0].GetProperty("user_ids").EnumerateArray().Select(u => u.GetGuid()));
    }

    [Fact]
    public async Task Read_marker_drives_unread_count_and_never_moves_back()
    {
        var (id, alice, bob, _, _) = await PairAsync();
        await alice.SendAsync(id, "one");
        var two = await alice.SendAsync(id, "two");
        await alice.SendAsync(id, "three");
        Assert.Equal(3, (await bob.GetJsonAsync($"/api/v1/conversations/{id}")).GetProperty("unread_count").GetInt64());
        Assert.Equal(0, (await alice.GetJsonAsync($"/api/v1/conversations/{id}")).GetProperty("unread_count").GetInt64());

        var marked = await (await bob.PutJsonAsync($"/api/v1/conversations/{id}/read", new { seq = two.GetProperty("seq").GetInt64() })).JsonAsync(HttpStatusCode.OK);
        Assert.Equal(two.GetProperty("seq").GetInt64(), marked.GetProperty("last_read_seq").GetInt64());
        Assert.Equal(1, (await bob.GetJsonAsync($"/api/v1/conversations/{id}")).GetProperty("unread_count").GetInt64());

        var back = await (await bob.PutJsonAsync($"/api/v1/conversations/{id}/read", new { seq = 1 })).JsonAsync(HttpStatusCode.OK);
        Assert.Equal(two.GetProperty("seq").GetInt64(), back.GetProperty("last_read_seq").GetInt64());
        await (await bob.PutJsonAsync($"/api/v1/conversations/{id}/read", new { seq = 100_000 })).ProblemAsync(HttpStatusCode.BadRequest, "invalid_seq");
    }

    [Fact]
    public async Task Content_must_be_present_and_within_the_limit()
    {
        var (id, alice, _, _, _) = await PairAsync();
        var url = $"/api/v1/conversations/{id}/messages";
        await (await alice.PostJsonAsync(url, new { content = "" })).ProblemAsync(HttpStatusCode.BadRequest, "content_required");
        await (await alice.PostJsonAsync(url, new { content = "   " })).ProblemAsync(HttpStatusCode.BadRequest, "content_required");
        await (await alice.PostJsonAsync(url, new { })).ProblemAsync(HttpStatusCode.BadRequest, "content_required");
        await (await alice.PostJsonAsync(url, new { content = new string('x', 16 * 1024 + 1) })).ProblemAsync(HttpStatusCode.BadRequest, "content_too_long");
        Assert.Equal(HttpStatusCode.Created, (await alice.PostJsonAsync(url, new { content = new string('x', 16 * 1024) })).StatusCode);
        // Multi-byte characters count by their UTF-8 size.
        await (await alice.PostJsonAsync(url, new { content = new string('é', 8 * 1024 + 1) })).ProblemAsync(HttpStatusCode.BadRequest, "content_too_long");
    }

    private static IEnumerable<string?> Contents(JsonElement page) =>
        page.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("content").GetString());
}
