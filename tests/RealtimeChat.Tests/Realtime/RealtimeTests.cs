using System.Net;
using System.Net.WebSockets;
using RealtimeChat.Tests.Infrastructure;

namespace RealtimeChat.Tests.Realtime;

public sealed class RealtimeTests(ServerFixture fixture) : IClassFixture<ServerFixture>
{
    private readonly ChatServer _server = fixture.Server;

    [Fact]
    public async Task Both_members_receive_message_events_live_on_every_connection()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(alice).CreateGroupAsync("live", bob);
        await using var bobPhone = await _server.ConnectAsync(bob);
        await using var bobWeb = await _server.ConnectAsync(bob);
        await using var aliceWeb = await _server.ConnectAsync(alice);

        var sent = await _server.Client(alice).SendAsync(id, "ping over ws");

        foreach (var socket in new[] { bobPhone, bobWeb, aliceWeb })
        {
            var frame = await socket.WaitForAsync(f => f.Type == "message.new");
            Assert.Equal(id, frame.ConversationId);
            Assert.Equal(sent.GetProperty("seq").GetInt64(), frame.Seq);
            Assert.Equal("ping over ws", frame.Data.GetProperty("content").GetString());
            Assert.Equal(alice, frame.Data.GetProperty("sender_id").GetGuid());
        }
    }

    [Fact]
    public async Task Sockets_of_one_user_connecting_at_once_while_added_to_conversations_receive_every_conversation()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = _server.Client(alice);
        // Memberships change while bob's sockets load theirs: each must end up subscribed to every conversation.
        var connecting = Task.WhenAll(Enumerable.Range(0, 12).Select(_ => _server.ConnectAsync(bob)));
        var conversations = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => aliceClient.CreateGroupAsync($"while connecting {i}", bob)));
        var sockets = await connecting;
        try
        {
            foreach (var conversation in conversations)
            {
                await aliceClient.SendAsync(conversation, $"to {conversation}");
            }
            foreach (var socket in sockets)
            {
                foreach (var conversation in conversations)
                {
                    await socket.WaitForAsync(f => f.Type == "message.new" && f.ConversationId == conversation);
                }
            }
        }
        finally
        {
            foreach (var socket in sockets)
            {
                await socket.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Every_kind_of_change_is_pushed_in_sequence()
    {
        var (alice, bob, carol) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        await using var bobSocket = await _server.ConnectAsync(bob);
        var aliceClient = _server.Client(alice);
        var bobClient = _server.Client(bob);

        var id = await aliceClient.CreateGroupAsync("all events", bob);
        var message = await aliceClient.SendAsync(id, "original");
        var messageUrl = $"/api/v1/conversations/{id}/messages/{message.GetProperty("id").GetGuid()}";
        await aliceClient.PatchJsonAsync(messageUrl, new { content = "edited" });
        await bobClient.PutAsync($"{messageUrl}/reactions/{Uri.EscapeDataString("🎉")}", null);
        await bobClient.DeleteAsync($"{messageUrl}/reactions/{Uri.EscapeDataString("🎉")}");
        await aliceClient.PatchJsonAsync($"/api/v1/conversations/{id}", new { name = "renamed" });
        await aliceClient.PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = carol });
        await aliceClient.DeleteAsync($"/api/v1/conversations/{id}/members/{carol}");
        await bobClient.PutJsonAsync($"/api/v1/conversations/{id}/read", new { seq = message.GetProperty("seq").GetInt64() });
        await aliceClient.DeleteAsync(messageUrl);

        var expected = new[]
        {
            "conversation.created", "message.new", "message.edited", "reaction.added", "reaction.removed",
            "conversation.updated", "member.added", "member.removed", "read.updated", "message.deleted",
        };
        var frames = new List<LiveFrame>();
        foreach (var _ in expected)
        {
            frames.Add(await bobSocket.WaitForAsync(f => f.ConversationId == id));
        }
        Assert.Equal(expected, frames.Select(f => f.Type));
        Assert.Equal(Enumerable.Range(1, expected.Length).Select(i => (long)i), frames.Select(f => f.Seq));
        Assert.Equal("edited", frames[2].Data.GetProperty("content").GetString());
        Assert.Equal("🎉", frames[3].Data.GetProperty("reaction").GetString());
        Assert.Equal("renamed", frames[5].Data.GetProperty("name").GetString());
        Assert.Equal(carol, frames[6].Data.GetProperty("member").GetProperty("user_id").GetGuid());
    }

    [Fact]
    public async Task Reconnecting_client_gets_exactly_what_it_missed_in_order()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = _server.Client(alice);
        var id = await aliceClient.CreateGroupAsync("resume", bob);
        long lastSeen;
        await using (var socket = await _server.ConnectAsync(bob))
        {
            await aliceClient.SendAsync(id, "seen 1");
            lastSeen = (await socket.WaitForAsync(f => f.Type == "message.new")).Seq;
        }

        var missed = new List<long>();
        for (var i = 0; i < 5; i++)
        {
            missed.Add((await aliceClient.SendAsync(id, $"missed {i}")).GetProperty("seq").GetInt64());
        }
        var edited = await aliceClient.SendAsync(id, "to edit");
        missed.Add(edited.GetProperty("seq").GetInt64());
        await aliceClient.PatchJsonAsync($"/api/v1/conversations/{id}/messages/{edited.GetProperty("id").GetGuid()}", new { content = "was edited" });

        await using var again = await _server.ConnectAsync(bob);
        await again.SendAsync(new { type = "resume", conversations = new Dictionary<Guid, long> { [id] = lastSeen } });
        var replay = new List<LiveFrame>();
        for (var i = 0; i < 7; i++)
        {
            replay.Add(await again.WaitForAsync(f => f.ConversationId == id && f.Type != "resumed"));
        }
        var resumed = await again.WaitForAsync(f => f.Type == "resumed");
        Assert.Equal(7, resumed.Json.GetProperty("replayed").GetInt32());

        Assert.Equal(Enumerable.Range((int)lastSeen + 1, 7).Select(i => (long)i), replay.Select(f => f.Seq));
        Assert.Equal([.. Enumerable.Repeat("message.new", 6), "message.edited"], replay.Select(f => f.Type));
        Assert.Equal(["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"], replay.Take(5).Select(f => f.Data.GetProperty("content").GetString()));
        // Replays render the stored message as it is now, decrypted.
        Assert.Equal("was edited", replay[6].Data.GetProperty("content").GetString());

        var live = await aliceClient.SendAsync(id, "after resume");
        var next = await again.WaitForAsync(f => f.Type == "message.new");
        Assert.Equal(live.GetProperty("seq").GetInt64(), next.Seq);
        Assert.DoesNotContain(await again.CollectAsync(TimeSpan.FromMilliseconds(300)), f => f.ConversationId == id);
    }

    [Fact]
    public async Task Past_the_bounded_gap_the_client_is_told_to_resync()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Realtime:MaxResumeEvents"] = "3" });
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var aliceClient = server.Client(alice);
        var id = await aliceClient.CreateGroupAsync("gap", bob);
        long latest = 0;
        for (var i = 0; i < 5; i++)
        {
            latest = (await aliceClient.SendAsync(id, $"m{i}")).GetProperty("seq").GetInt64();
        }

        await using var socket = await server.ConnectAsync(bob);
        await socket.SendAsync(new { type = "resume", conversations = new Dictionary<Guid, long> { [id] = 1 } });
        var frame = await socket.WaitForAsync(f => f.ConversationId == id);

        Assert.Equal("resync", frame.Type);
        Assert.Equal(latest, frame.Json.GetProperty("latest_seq").GetInt64());
        var next = await aliceClient.SendAsync(id, "live again");
        Assert.Equal(next.GetProperty("seq").GetInt64(), (await socket.WaitForAsync(f => f.Type == "message.new")).Seq);
    }

    [Fact]
    public async Task Resume_of_a_foreign_conversation_is_refused()
    {
        var (owner, stranger) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(owner).CreateGroupAsync("closed");
        await _server.Client(owner).SendAsync(id, "not for you");

        await using var socket = await _server.ConnectAsync(stranger);
        await socket.SendAsync(new { type = "resume", conversations = new Dictionary<Guid, long> { [id] = 0 } });
        var error = await socket.WaitForAsync(f => f.Type == "error");
        Assert.Equal("conversation_not_found", error.Json.GetProperty("code").GetString());

        await socket.SendAsync(new { type = "typing", conversation_id = id });
        Assert.Equal("conversation_not_found", (await socket.WaitForAsync(f => f.Type == "error")).Json.GetProperty("code").GetString());
        await _server.Client(owner).SendAsync(id, "still not for you");
        Assert.DoesNotContain(await socket.CollectAsync(TimeSpan.FromMilliseconds(300)), f => f.ConversationId == id);
    }

    [Fact]
    public async Task Typing_is_relayed_to_the_other_members_only()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(alice).CreateGroupAsync("typing", bob);
        await using var aliceSocket = await _server.ConnectAsync(alice);
        await using var bobSocket = await _server.ConnectAsync(bob);

        await aliceSocket.SendAsync(new { type = "typing", conversation_id = id });

        var typing = await bobSocket.WaitForAsync(f => f.Type == "typing");
        Assert.Equal(id, typing.ConversationId);
        Assert.Equal(alice, typing.Json.GetProperty("user_id").GetGuid());
        Assert.DoesNotContain(await aliceSocket.CollectAsync(TimeSpan.FromMilliseconds(300)), f => f.Type == "typing");
    }

    [Fact]
    public async Task Added_members_start_and_removed_members_stop_receiving()
    {
        var (owner, carol) = (Guid.NewGuid(), Guid.NewGuid());
        var ownerClient = _server.Client(owner);
        var id = await ownerClient.CreateGroupAsync("membership");
        await using var carolSocket = await _server.ConnectAsync(carol);

        await ownerClient.PostJsonAsync($"/api/v1/conversations/{id}/members", new { user_id = carol });
        Assert.Equal("member.added", (await carolSocket.WaitForAsync(f => f.ConversationId == id)).Type);
        await ownerClient.SendAsync(id, "welcome");
        Assert.Equal("welcome", (await carolSocket.WaitForAsync(f => f.Type == "message.new")).Data.GetProperty("content").GetString());

        await ownerClient.DeleteAsync($"/api/v1/conversations/{id}/members/{carol}");
        Assert.Equal("member.removed", (await carolSocket.WaitForAsync(f => f.ConversationId == id)).Type);
        await ownerClient.SendAsync(id, "after you left");
        Assert.DoesNotContain(await carolSocket.CollectAsync(TimeSpan.FromMilliseconds(300)), f => f.ConversationId == id);
    }

    [Fact]
    public async Task Handshake_needs_a_valid_token_from_header_or_query()
    {
        var anonymous = new ClientWebSocket();
        var refused = await Assert.ThrowsAsync<WebSocketException>(() =>
            anonymous.ConnectAsync(new Uri($"ws://{_server.BaseAddress.Authority}/ws"), CancellationToken.None));
        Assert.Contains("401", refused.Message);

        var forged = new ClientWebSocket();
        await Assert.ThrowsAsync<WebSocketException>(() =>
            forged.ConnectAsync(new Uri($"ws://{_server.BaseAddress.Authority}/ws?access_token=not.a.jwt"), CancellationToken.None));

        var user = Guid.NewGuid();
        using var browser = new ClientWebSocket();
        await browser.ConnectAsync(new Uri($"ws://{_server.BaseAddress.Authority}/ws?access_token={_server.TokenFor(user)}"), CancellationToken.None);
        await using var live = new LiveSocket(browser);
        var ready = await live.WaitForAsync(f => f.Type == "ready");
        Assert.Equal(user, ready.Json.GetProperty("user_id").GetGuid());
    }

    [Fact]
    public async Task Plain_http_to_the_socket_endpoint_is_a_400()
    {
        var response = await _server.Client(Guid.NewGuid()).GetAsync("/ws");
        await response.ProblemAsync(HttpStatusCode.BadRequest, "websocket_required");
    }

    [Fact]
    public async Task Large_client_frames_are_read_whole_and_oversized_ones_close_the_socket()
    {
        var (alice, bob) = (Guid.NewGuid(), Guid.NewGuid());
        var id = await _server.Client(alice).CreateGroupAsync("big frames", bob);
        var seq = (await _server.Client(alice).SendAsync(id, "in a long resume")).GetProperty("seq").GetInt64();
        await using var socket = await _server.ConnectAsync(bob);

        // ~5 KB: more than a connection's standing buffer, within the frame limit.
        var conversations = Enumerable.Range(0, 100).ToDictionary(_ => Guid.NewGuid(), _ => 0L);
        conversations[id] = seq - 1;
        await socket.SendAsync(new { type = "resume", conversations });
        var replayed = await socket.WaitForAsync(f => f.Type == "message.new");
        Assert.Equal("in a long resume", replayed.Data.GetProperty("content").GetString());

        await socket.Socket.SendAsync(new byte[20 * 1024], WebSocketMessageType.Text, true, CancellationToken.None);
        await socket.WaitClosedAsync();
        Assert.Equal(WebSocketCloseStatus.MessageTooBig, socket.CloseStatus);
    }
}
