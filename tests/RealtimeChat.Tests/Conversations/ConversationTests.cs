using System.Net;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Conversations;

public sealed class ConversationTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    [Fact]
    public async Task Direct_conversation_is_created_once_for_the_pair()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var first = await (await _server.Client(alice).PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { bob } }))
            .JsonAsync(HttpStatusCode.Created);
        var again = await (await _server.Client(bob).PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { alice } }))
            .JsonAsync(HttpStatusCode.OK);

        Assert.Equal(first.GetProperty("id").GetGuid(), again.GetProperty("id").GetGuid());
        Assert.Equal("direct", again.GetProperty("kind").GetString());
        Assert.Equal(2, again.GetProperty("member_count").GetInt32());
    }

    [Fact]
    public async Task Direct_conversation_needs_exactly_one_other_user()
    {
        var alice = Guid.NewGuid();
        var client = _server.Client(alice);
        await (await client.PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { alice } }))
            .ProblemAsync(HttpStatusCode.BadRequest, "direct_needs_one_other_member");
        await (await client.PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { Guid.NewGuid(), Guid.NewGuid() } }))
            .ProblemAsync(HttpStatusCode.BadRequest, "direct_needs_one_other_member");
    }

    [Fact]
    public async Task Group_creator_is_owner_and_members_see_it()
    {
        var (owner, member) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("Climbing", member);

        var seen = await _server.Client(member).GetJsonAsync($"/api/v1/conversations/{id}");
        Assert.Equal("Climbing", seen.GetProperty("name").GetString());
        Assert.Equal("member", seen.GetProperty("my_role").GetString());
        var roles = seen.GetProperty("members").EnumerateArray().ToDictionary(m => m.GetProperty("user_id").GetGuid(), m => m.GetProperty("role").GetString());
        Assert.Equal("owner", roles[owner]);
        Assert.Equal("member", roles[member]);
    }

    [Fact]
    public async Task Group_needs_a_name()
    {
        var response = await _server.Client(Guid.NewGuid()).PostJsonAsync("/api/v1/conversations", new { kind = "group", name = "  ", member_ids = Array.Empty<Guid>() });
        await response.ProblemAsync(HttpStatusCode.BadRequest, "name_required");
    }

    [Fact]
    public async Task List_is_newest_activity_first_with_preview_unread_count_and_cursor()
    {
        var (me, other) = (Guid.NewGuid(), Guid.NewGuid());
        var mine = _server.Client(me);
        var theirs = _server.Client(other);
        var quiet = await mine.CreateGroupAsync("quiet", other);
        var busy = await mine.CreateGroupAsync("busy", other);
        var third = await mine.CreateGroupAsync("third", other);
        await theirs.SendAsync(busy, "first");
        await theirs.SendAsync(busy, "second news");
        await theirs.SendAsync(quiet, "hello quiet");

        var page1 = await mine.GetJsonAsync("/api/v1/conversations?limit=2");
        var ids = page1.GetProperty("conversations").EnumerateArray().Select(c => c.GetProperty("id").GetGuid()).ToList();
        Assert.Equal([quiet, busy], ids);
        var busyDto = page1.GetProperty("conversations")[1];
        Assert.Equal(2, busyDto.GetProperty("unread_count").GetInt64());
        Assert.Equal("second news", busyDto.GetProperty("last_message").GetProperty("preview").GetString());

        var cursor = page1.GetProperty("next_cursor").GetString();
        Assert.NotNull(cursor);
        var page2 = await mine.GetJsonAsync($"/api/v1/conversations?limit=2&cursor={cursor}");
        Assert.Equal([third], page2.GetProperty("conversations").EnumerateArray().Select(c => c.GetProperty("id").GetGuid()));
        Assert.Equal(System.Text.Json.JsonValueKind.Null, page2.GetProperty("next_cursor").ValueKind);
    }

    [Fact]
    public async Task Non_members_get_404_everywhere_not_403()
    {
        var (owner, stranger) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("private");
        var message = await _server.Client(owner).SendAsync(id, "secret");
        var messageId = message.GetProperty("id").GetGuid();
        var client = _server.Client(stranger);

        var attempts = new (HttpMethod Method, string Url, object? Body)[]
        {
            (HttpMethod.Get, $"/api/v1/conversations/{id}", null),
            (HttpMethod.Patch, $"/api/v1/conversations/{id}", new { name = "mine now" }),
            (HttpMethod.Get, $"/api/v1/conversations/{id}/members", null),
            (HttpMethod.Post, $"/api/v1/conversations/{id}/members", new { user_id = stranger }),
            (HttpMethod.Delete, $"/api/v1/conversations/{id}/members/{owner}", null),
            (HttpMethod.Post, $"/api/v1/conversations/{id}/leave", null),
            (HttpMethod.Get, $"/api/v1/conversations/{id}/messages", null),
            (HttpMethod.Post, $"/api/v1/conversations/{id}/messages", new { content = "let me in" }),
            (HttpMethod.Get, $"/api/v1/conversations/{id}/messages/{messageId}", null),
            (HttpMethod.Patch, $"/api/v1/conversations/{id}/messages/{messageId}", new { content = "x" }),
            (HttpMethod.Delete, $"/api/v1/conversations/{id}/messages/{messageId}", null),
            (HttpMethod.Put, $"/api/v1/conversations/{id}/messages/{messageId}/reactions/%F0%9F%91%8D", null),
            (HttpMethod.Put, $"/api/v1/conversations/{id}/read", new { seq = 1 }),
        };
        foreach (var (method, url, body) in attempts)
        {
            using var request = new HttpRequestMessage(method, url);
            if (body is not null)
            {
                request.Content = System.Net.Http.Json.JsonContent.Create(body, options: ChatJson.Options);
            }
            var response = await client.SendAsync(request);
            await response.ProblemAsync(HttpStatusCode.NotFound, "conversation_not_found");
        }
        var history = await _server.Client(owner).GetJsonAsync($"/api/v1/conversations/{id}/messages");
        Assert.Equal("secret", history.GetProperty("messages")[0].GetProperty("content").GetString());
    }

    [Fact]
    public async Task Owner_and_admins_manage_members_and_members_cannot()
    {
        var (owner, admin, member, newcomer) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("team", member);
        await (await _server.Client(owner).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = admin, role = "admin" }))
            .JsonAsync(HttpStatusCode.Created);

        await (await _server.Client(member).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = newcomer }))
            .ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        await (await _server.Client(admin).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = newcomer, role = "admin" }))
            .ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        await (await _server.Client(admin).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = newcomer }))
            .JsonAsync(HttpStatusCode.Created);
        await (await _server.Client(admin).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = newcomer }))
            .ProblemAsync(HttpStatusCode.Conflict, "already_member");

        await (await _server.Client(member).DeleteAsync($"/api/v1/conversations/{id}/members/{newcomer}"))
            .ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        await (await _server.Client(admin).DeleteAsync($"/api/v1/conversations/{id}/members/{owner}"))
            .ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client(admin).DeleteAsync($"/api/v1/conversations/{id}/members/{newcomer}")).StatusCode);

        await (await _server.Client(newcomer).GetAsync($"/api/v1/conversations/{id}")).ProblemAsync(HttpStatusCode.NotFound);
        await (await _server.Client(member).PatchJsonAsync($"/api/v1/conversations/{id}", new { name = "renamed" }))
            .ProblemAsync(HttpStatusCode.Forbidden, "not_allowed");
        var renamed = await (await _server.Client(admin).PatchJsonAsync($"/api/v1/conversations/{id}", new { name = "renamed" })).JsonAsync(HttpStatusCode.OK);
        Assert.Equal("renamed", renamed.GetProperty("name").GetString());
    }

    [Fact]
    public async Task Owner_leaving_hands_ownership_to_an_admin()
    {
        var (owner, admin, member) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("handover", member);
        await _server.Client(owner).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = admin, role = "admin" });

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client(owner).PostAsync($"/api/v1/conversations/{id}/leave", null)).StatusCode);

        var members = await _server.Client(member).GetJsonAsync($"/api/v1/conversations/{id}/members");
        var roles = members.EnumerateArray().ToDictionary(m => m.GetProperty("user_id").GetGuid(), m => m.GetProperty("role").GetString());
        Assert.False(roles.ContainsKey(owner));
        Assert.Equal("owner", roles[admin]);
        await (await _server.Client(owner).GetAsync($"/api/v1/conversations/{id}/messages")).ProblemAsync(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task Direct_conversations_cannot_be_renamed_or_grown()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var created = await (await _server.Client(alice).PostJsonAsync("/api/v1/conversations", new { kind = "direct", member_ids = new[] { bob } })).JsonAsync(HttpStatusCode.Created);
        var id = created.GetProperty("id").GetGuid();
        await (await _server.Client(alice).PatchJsonAsync($"/api/v1/conversations/{id}", new { name = "x" })).ProblemAsync(HttpStatusCode.BadRequest, "not_a_group");
        await (await _server.Client(alice).PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = Guid.NewGuid() })).ProblemAsync(HttpStatusCode.BadRequest, "not_a_group");
    }
}
