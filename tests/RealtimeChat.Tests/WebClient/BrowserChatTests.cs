using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Playwright;
using RealtimeChat.Tests.Infrastructure;
using static Microsoft.Playwright.Assertions;

namespace RealtimeChat.Tests.WebClient;

/// <summary>
/// Two people chat through the web client in a real browser (two isolated contexts, Bob on a phone-sized window),
/// against the real service on the suite's database. Screenshots of the key moments go to tests/artifacts.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class BrowserChatTests(Browser browser) : IClassFixture<Browser>
{
    private const string AliceId = "11111111-1111-4111-8111-111111111111";
    private const string BobId = "22222222-2222-4222-8222-222222222222";

    static BrowserChatTests()
    {
        // Two browsers, the service and the database share two cores.
        SetDefaultExpectTimeout(20_000);
    }

    [Fact]
    public async Task Two_users_chat_live_edit_react_reply_survive_a_network_drop_and_exchange_a_voice_message()
    {
        // No configured key: the service signs its own development tokens, so the page offers sign-in.
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null });
        var errors = new ConcurrentQueue<string>();
        await using var aliceContext = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        await using var bobContext = await browser.Chromium.NewContextAsync(new()
        {
            BaseURL = server.BaseAddress.ToString(),
            ViewportSize = new() { Width = 390, Height = 844 },
            IsMobile = true,
            HasTouch = true,
        });
        var alice = await OpenAsync(aliceContext, "alice", errors);
        var bob = await OpenAsync(bobContext, "bob", errors);
        var shots = Browser.ArtifactsDirectory;

        await SignInAsync(alice, "Alice");
        await SignInAsync(bob, "Bob");

        // Alice starts a direct conversation with Bob and writes first, with the keyboard.
        await alice.GetByText("New conversation").ClickAsync();
        await alice.GetByLabel("Member ids").FillAsync(BobId);
        await alice.GetByRole(AriaRole.Button, new() { Name = "Create" }).ClickAsync();
        await Expect(alice.Locator("#conversation-title")).ToHaveTextAsync("Bob");
        await SendAsync(alice, "Hello Bob!");

        // Bob's list shows it live, unread, with a preview; opening it reads it.
        var bobEntry = bob.Locator("#conversation-list button").First;
        await Expect(bobEntry).ToContainTextAsync("Alice: Hello Bob!");
        await Expect(bobEntry.Locator(".unread")).ToHaveTextAsync("1");
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "01-bob-list-unread.png") });
        await bobEntry.ClickAsync();
        await Expect(Message(bob, "Hello Bob!")).ToBeVisibleAsync();
        await Expect(alice.Locator(".seen")).ToHaveTextAsync("Seen by Bob");

        // Bob types (Alice sees it) and answers.
        await bob.GetByLabel("Message", new() { Exact = true }).PressSequentiallyAsync("Hi Al");
        await Expect(alice.Locator("#typing")).ToHaveTextAsync("Bob is typing…");
        await bob.GetByLabel("Message", new() { Exact = true }).PressSequentiallyAsync("ice!");
        await bob.GetByLabel("Message", new() { Exact = true }).PressAsync("Enter");
        await Expect(Message(alice, "Hi Alice!")).ToBeVisibleAsync();

        // Alice edits her first message; Bob reacts to it; Alice replies to Bob's.
        await Message(alice, "Hello Bob!").GetByRole(AriaRole.Button, new() { Name = "Edit this message" }).ClickAsync();
        await alice.GetByLabel("Message", new() { Exact = true }).FillAsync("Hello Bob, edited!");
        await alice.GetByLabel("Message", new() { Exact = true }).PressAsync("Enter");
        await Expect(Message(bob, "Hello Bob, edited!").Locator(".edited")).ToBeVisibleAsync();
        await Expect(Message(bob, "Hello Bob!")).ToHaveCountAsync(0);

        await Message(bob, "Hello Bob, edited!").GetByRole(AriaRole.Button, new() { Name = "React with 👍" }).ClickAsync();
        await Expect(Message(alice, "Hello Bob, edited!").Locator(".reactions")).ToHaveTextAsync("👍 1");

        await Message(alice, "Hi Alice!").GetByRole(AriaRole.Button, new() { Name = "Reply to this message" }).ClickAsync();
        await Expect(alice.Locator("#reply-banner")).ToContainTextAsync("Replying to Bob");
        await SendAsync(alice, "Replying to you");
        await Expect(Message(bob, "Replying to you").Locator(".quote")).ToHaveTextAsync("↪ You: Hi Alice!");
        await alice.ScreenshotAsync(new() { Path = Path.Combine(shots, "02-alice-chat.png") });
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "03-bob-chat-phone.png") });

        // Bob's network drops. Alice keeps writing; Bob sees none of it until he is back, then all of it, once, in order.
        var replies = new ConcurrentQueue<string>();
        bob.WebSocket += (_, socket) => socket.FrameReceived += (_, frame) =>
        {
            if (frame.Text is { } text && (text.Contains("\"type\":\"resumed\"", StringComparison.Ordinal) || text.Contains("\"type\":\"resync\"", StringComparison.Ordinal)))
            {
                replies.Enqueue(text);
            }
        };
        await bobContext.SetOfflineAsync(true);
        await Expect(bob.Locator("#connection")).ToHaveTextAsync("Offline");
        string[] whileAway = ["while you were away 1", "while you were away 2", "while you were away 3"];
        foreach (var text in whileAway)
        {
            await SendAsync(alice, text);
        }
        await Message(alice, "Hello Bob, edited!").GetByRole(AriaRole.Button, new() { Name = "React with 🎉" }).ClickAsync();
        await Expect(Message(alice, "Hello Bob, edited!").Locator(".reactions")).ToHaveTextAsync("👍 1🎉 1");
        await Expect(Message(bob, whileAway[0])).ToHaveCountAsync(0);
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "04-bob-offline.png") });

        await bobContext.SetOfflineAsync(false);
        await Expect(bob.Locator("#connection")).ToHaveTextAsync("Live");
        await Expect(Message(bob, whileAway[2])).ToBeVisibleAsync();
        await Expect(Message(bob, "Hello Bob, edited!").Locator(".reactions")).ToHaveTextAsync("👍 1🎉 1");
        await AssertSameMessagesAsync(alice, bob);
        // Through the server's replay (resume), not a reload of history.
        Assert.Contains(replies, r => r.Contains("\"type\":\"resumed\"", StringComparison.Ordinal) && !r.Contains("\"replayed\":0", StringComparison.Ordinal));
        Assert.DoesNotContain(replies, r => r.Contains("\"type\":\"resync\"", StringComparison.Ordinal));
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "05-bob-back-online.png") });

        // Alice records a voice message from Chromium's fake microphone; Bob plays it and seeks in it.
        await alice.GetByRole(AriaRole.Button, new() { Name = "Record voice message" }).ClickAsync();
        await Expect(alice.Locator("#record-status")).ToContainTextAsync("Recording");
        await Task.Delay(2000);
        await alice.GetByRole(AriaRole.Button, new() { Name = "Stop and send" }).ClickAsync();
        await Expect(alice.Locator("#messages audio")).ToHaveCountAsync(1);
        var bobAudio = bob.Locator("#messages audio");
        await Expect(bobAudio).ToHaveCountAsync(1);
        var played = await bobAudio.EvaluateAsync<double>(
            """
            async (audio) => {
              const until = (predicate) => new Promise((resolve, reject) => {
                const started = Date.now();
                const check = () => predicate() ? resolve() : Date.now() - started > 15000 ? reject(new Error('audio timed out: ' + audio.duration + ' ' + audio.currentTime + ' ' + (audio.error && audio.error.message))) : setTimeout(check, 50);
                check();
              });
              await until(() => Number.isFinite(audio.duration) && audio.duration > 1 && audio.currentTime === 0);
              audio.muted = true;
              await audio.play();
              await until(() => audio.currentTime > 0.2);
              audio.pause();
              audio.currentTime = audio.duration / 2;
              await until(() => !audio.seeking);
              return audio.currentTime / audio.duration;
            }
            """);
        Assert.InRange(played, 0.4, 0.6);
        // Playwright does not report a media element's own requests; the service's HTTP metrics count them.
        using (var metrics = server.Client())
        {
            var text = await metrics.GetStringAsync("/metrics");
            Assert.Contains(text.Split('\n'), line =>
                line.StartsWith("http_requests_received_total{", StringComparison.Ordinal) && line.Contains("code=\"206\"") && line.Contains("media"));
        }
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "06-bob-voice-message.png") });
        await AssertSameMessagesAsync(alice, bob);

        Assert.True(errors.IsEmpty, "Console errors:\n" + string.Join("\n", errors));
    }

    [Fact]
    public async Task A_group_with_roles_pages_history_shows_matrix_state_and_shares_images_files_and_deletions()
    {
        // A configured key, as with a real identity provider: the page takes the token from the URL fragment.
        // The bridge is on, with a homeserver nobody answers for, so messages wait in the outbox as "pending".
        await using var server = await ChatServer.StartAsync(new()
        {
            ["Matrix:Enabled"] = "true",
            ["Matrix:HomeserverUrl"] = "http://127.0.0.1:9",
            ["Matrix:ServerName"] = "chat.test",
            ["Matrix:AppserviceUrl"] = "http://127.0.0.1:9",
            ["Matrix:AsToken"] = "as-token-for-the-browser-test",
            ["Matrix:HsToken"] = "hs-token-for-the-browser-test",
        });
        var aliceId = Guid.Parse(AliceId);
        var bobId = Guid.Parse(BobId);
        using var api = server.Client(aliceId, "Alice");
        var created = await api.PostAsJsonAsync("/api/v1/conversations", new { kind = "group", name = "Project", member_ids = new[] { bobId } });
        var conversationId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString();
        for (var i = 1; i <= 45; i++)
        {
            (await api.PostAsJsonAsync($"/api/v1/conversations/{conversationId}/messages", new { content = $"history {i}" })).EnsureSuccessStatusCode();
        }

        var errors = new ConcurrentQueue<string>();
        await using var aliceContext = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        await using var bobContext = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        var alice = await OpenAsync(aliceContext, "alice", errors, $"/#access_token={server.TokenFor(aliceId, name: "Alice")}");
        var bob = await OpenAsync(bobContext, "bob", errors, $"/#access_token={server.TokenFor(bobId, name: "Bob")}");
        var shots = Browser.ArtifactsDirectory;
        await Expect(alice.Locator("#connection")).ToHaveTextAsync("Live");
        Assert.DoesNotContain("access_token", alice.Url); // taken out of the address bar

        // The latest page first; scrolling up brings the rest.
        await alice.Locator("#conversation-list button", new() { HasText = "Project" }).ClickAsync();
        await Expect(Message(alice, "history 45")).ToBeVisibleAsync();
        await Expect(alice.Locator("#messages > li")).ToHaveCountAsync(30);
        await Expect(Message(alice, "history 45").Locator(".matrix")).ToHaveTextAsync("Matrix: pending");
        await alice.Locator("#messages-scroll").EvaluateAsync("element => element.scrollTop = 0");
        await Expect(alice.Locator("#messages > li")).ToHaveCountAsync(45);
        await Expect(Message(alice, "history 1")).ToBeAttachedAsync();
        await Expect(alice.Locator("#load-earlier")).ToBeHiddenAsync();
        await alice.ScreenshotAsync(new() { Path = Path.Combine(shots, "07-alice-history-matrix-pending.png") });

        // The owner makes Bob an admin; Bob's page learns it live.
        await bob.Locator("#conversation-list button", new() { HasText = "Project" }).ClickAsync();
        await Expect(Message(bob, "history 45")).ToBeVisibleAsync();
        await Expect(bob.Locator("#add-member-form")).ToBeHiddenAsync();
        await alice.GetByText("Members (2)").ClickAsync();
        await alice.Locator("#member-list select").SelectOptionAsync("admin");
        await bob.GetByText("Members (2)").ClickAsync();
        await Expect(bob.Locator("#add-member-form")).ToBeVisibleAsync();
        // Names come from the members' tokens, through the API: Bob's page never saw Alice sign in.
        await Expect(bob.Locator("#member-list")).ToContainTextAsync("Alice");
        await Expect(bob.Locator("#member-list")).ToContainTextAsync("admin");

        // An image and a file reach Bob, loaded by the browser itself with the token in the media URL.
        await alice.Locator("#file-input").SetInputFilesAsync(new FilePayload
        {
            Name = "dot.png",
            MimeType = "image/png",
            Buffer = Convert.FromBase64String("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="),
        });
        var image = bob.Locator("#messages img[alt='dot.png']");
        await Expect(image).ToBeVisibleAsync();
        await Expect(image).ToHaveJSPropertyAsync("naturalWidth", 1);
        await alice.Locator("#file-input").SetInputFilesAsync(new FilePayload
        {
            Name = "notes.txt",
            MimeType = "text/plain",
            Buffer = "meeting at noon"u8.ToArray(),
        });
        await Expect(bob.Locator("#messages a", new() { HasText = "notes.txt" })).ToBeVisibleAsync();

        // Bob, now an admin, deletes one of Alice's messages; Alice sees the tombstone.
        await Message(bob, "history 45").GetByRole(AriaRole.Button, new() { Name = "Delete this message" }).ClickAsync();
        await Expect(alice.Locator("#messages > li.deleted")).ToHaveCountAsync(1);
        await Expect(Message(alice, "history 45")).ToHaveCountAsync(0);
        await bob.ScreenshotAsync(new() { Path = Path.Combine(shots, "08-bob-image-file-deleted.png") });

        Assert.True(errors.IsEmpty, "Console errors:\n" + string.Join("\n", errors));
    }

    [Fact]
    public async Task After_missing_more_than_a_replay_holds_the_page_reloads_history_without_gap_or_duplicate()
    {
        // Two missed events are the most the server replays here; more, and it tells the client to resync over REST.
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null, ["Realtime:MaxResumeEvents"] = "2" });
        var errors = new ConcurrentQueue<string>();
        await using var pair = await AliceAndBobInAConversationAsync(server, errors);
        var (alice, bob, bobContext) = (pair.Alice, pair.Bob, pair.BobContext);
        await SendAsync(alice, "before the drop");
        // Bob uses only the keyboard: Tab to the conversation, Enter opens it and puts him in the message box.
        var entry = bob.Locator("#conversation-list button").First;
        await Expect(entry).ToBeVisibleAsync();
        for (var presses = 0; presses < 10 && !await entry.EvaluateAsync<bool>("element => element === document.activeElement"); presses++)
        {
            await bob.Keyboard.PressAsync("Tab");
        }
        await bob.Keyboard.PressAsync("Enter");
        await Expect(Message(bob, "before the drop")).ToBeVisibleAsync();
        await Expect(bob.GetByLabel("Message", new() { Exact = true })).ToBeFocusedAsync();
        await bob.Keyboard.TypeAsync("typed without a mouse");
        await bob.Keyboard.PressAsync("Enter");
        await Expect(Message(alice, "typed without a mouse")).ToBeVisibleAsync();

        var resyncs = 0;
        bob.WebSocket += (_, socket) => socket.FrameReceived += (_, frame) =>
        {
            if (frame.Text?.Contains("\"type\":\"resync\"", StringComparison.Ordinal) == true)
            {
                Interlocked.Increment(ref resyncs);
            }
        };
        await bobContext.SetOfflineAsync(true);
        await Expect(bob.Locator("#connection")).ToHaveTextAsync("Offline");
        for (var i = 1; i <= 5; i++)
        {
            await SendAsync(alice, $"missed {i}");
        }
        await bobContext.SetOfflineAsync(false);
        await Expect(Message(bob, "missed 5")).ToBeVisibleAsync();
        await AssertSameMessagesAsync(alice, bob);
        Assert.Equal(1, Volatile.Read(ref resyncs));

        // Live again after the resync.
        await SendAsync(alice, "after the resync");
        await Expect(Message(bob, "after the resync")).ToBeVisibleAsync();
        await AssertSameMessagesAsync(alice, bob);
        Assert.True(errors.IsEmpty, "Console errors:\n" + string.Join("\n", errors));
    }

    [Fact]
    public async Task A_conversation_reached_with_the_keyboard_keeps_the_focus_when_a_message_arrives()
    {
        await using var server = await ChatServer.StartAsync(new() { ["Auth:SigningKey"] = null });
        var errors = new ConcurrentQueue<string>();
        await using var pair = await AliceAndBobInAConversationAsync(server, errors);
        var (alice, bob) = (pair.Alice, pair.Bob);
        await SendAsync(alice, "first");
        var entry = bob.Locator("#conversation-list button").First;
        await Expect(entry.Locator(".preview")).ToHaveTextAsync("Alice: first");

        // Bob has tabbed to the conversation when the next message updates the list.
        await entry.FocusAsync();
        await SendAsync(alice, "second");
        await Expect(entry.Locator(".preview")).ToHaveTextAsync("Alice: second");
        await Expect(entry).ToBeFocusedAsync();
        await bob.Keyboard.PressAsync("Enter");
        await Expect(Message(bob, "second")).ToBeVisibleAsync();
        Assert.True(errors.IsEmpty, "Console errors:\n" + string.Join("\n", errors));
    }

    [Fact]
    public async Task Matrix_delivery_states_and_Matrix_participants_names_are_shown()
    {
        // The page's rendering of what the bridge reports, with the answers rewritten in the browser: a sent and a
        // failed message, and a Matrix participant (the bridge itself is tested against the homeserver emulator).
        await using var server = await ChatServer.StartAsync();
        var aliceId = Guid.Parse(AliceId);
        var external = Guid.NewGuid();
        using var api = server.Client(aliceId, "Alice");
        var created = await api.PostAsJsonAsync("/api/v1/conversations", new { kind = "group", name = "Bridged", member_ids = new[] { Guid.Parse(BobId) } });
        var conversationId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString();
        foreach (var text in new[] { "reached the room", "refused by the room", "written on Matrix" })
        {
            (await api.PostAsJsonAsync($"/api/v1/conversations/{conversationId}/messages", new { content = text })).EnsureSuccessStatusCode();
        }

        var errors = new ConcurrentQueue<string>();
        await using var context = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        var page = await context.NewPageAsync();
        await page.RouteAsync(new Regex("/api/v1/conversations/[0-9a-f-]+/messages"), async route =>
        {
            var response = await route.FetchAsync();
            var body = System.Text.Json.Nodes.JsonNode.Parse(await response.TextAsync())!;
            foreach (var message in body["messages"]!.AsArray())
            {
                switch ((string?)message!["content"])
                {
                    case "reached the room":
                        message["matrix"] = new System.Text.Json.Nodes.JsonObject { ["state"] = "sent", ["event_id"] = "$sent-event" };
                        break;
                    case "refused by the room":
                        message["matrix"] = new System.Text.Json.Nodes.JsonObject { ["state"] = "failed", ["error"] = "M_FORBIDDEN: not in the room" };
                        break;
                    case "written on Matrix":
                        message["sender_id"] = external.ToString();
                        break;
                }
            }
            await route.FulfillAsync(new() { Response = response, Body = body.ToJsonString() });
        });
        await page.RouteAsync(new Regex("/api/v1/conversations/[0-9a-f-]+$"), async route =>
        {
            var response = await route.FetchAsync();
            var body = System.Text.Json.Nodes.JsonNode.Parse(await response.TextAsync())!;
            body["members"]!.AsArray().Add(new System.Text.Json.Nodes.JsonObject
            {
                ["user_id"] = external.ToString(),
                ["role"] = "member",
                ["joined_at"] = DateTimeOffset.UtcNow.ToString("O"),
                ["last_read_seq"] = 0,
                ["matrix_user_id"] = "@hugh:matrix.example",
                ["display_name"] = "Hugh Mann",
            });
            await route.FulfillAsync(new() { Response = response, Body = body.ToJsonString() });
        });
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                errors.Enqueue(message.Text);
            }
        };
        page.PageError += (_, error) => errors.Enqueue(error);
        await page.GotoAsync($"/#access_token={server.TokenFor(aliceId, name: "Alice")}");
        await page.Locator("#conversation-list button", new() { HasText = "Bridged" }).ClickAsync();

        await Expect(Message(page, "reached the room").Locator(".matrix")).ToHaveTextAsync("Matrix: sent");
        await Expect(Message(page, "refused by the room").Locator(".matrix.failed")).ToHaveTextAsync("Matrix: failed (M_FORBIDDEN: not in the room)");
        await Expect(Message(page, "written on Matrix").Locator(".sender")).ToHaveTextAsync("Hugh Mann");
        await page.GetByText("Members (3)").ClickAsync();
        await Expect(page.Locator("#member-list")).ToContainTextAsync("Hugh Mann(Matrix)");
        await page.ScreenshotAsync(new() { Path = Path.Combine(Browser.ArtifactsDirectory, "09-matrix-states.png") });
        Assert.True(errors.IsEmpty, "Console errors:\n" + string.Join("\n", errors));
    }

    /// <summary>Alice and Bob signed in, each in a browser context of their own, and the conversation Alice created with Bob.</summary>
    private async Task<AliceAndBob> AliceAndBobInAConversationAsync(ChatServer server, ConcurrentQueue<string> errors)
    {
        var aliceContext = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        var bobContext = await browser.Chromium.NewContextAsync(new() { BaseURL = server.BaseAddress.ToString() });
        var pair = new AliceAndBob(aliceContext, await OpenAsync(aliceContext, "alice", errors), bobContext, await OpenAsync(bobContext, "bob", errors));
        await SignInAsync(pair.Alice, "Alice");
        await SignInAsync(pair.Bob, "Bob");
        await pair.Alice.GetByText("New conversation").ClickAsync();
        await pair.Alice.GetByLabel("Member ids").FillAsync(BobId);
        await pair.Alice.GetByRole(AriaRole.Button, new() { Name = "Create" }).ClickAsync();
        return pair;
    }

    private sealed record AliceAndBob(IBrowserContext AliceContext, IPage Alice, IBrowserContext BobContext, IPage Bob) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await AliceContext.DisposeAsync();
            await BobContext.DisposeAsync();
        }
    }

    private static async Task<IPage> OpenAsync(IBrowserContext context, string who, ConcurrentQueue<string> errors, string path = "/")
    {
        var page = await context.NewPageAsync();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                errors.Enqueue($"{who}: {message.Text}");
            }
        };
        page.PageError += (_, error) => errors.Enqueue($"{who}: {error}");
        page.Dialog += (_, dialog) => _ = dialog.AcceptAsync();
        await page.GotoAsync(path);
        return page;
    }

    private static async Task SignInAsync(IPage page, string name)
    {
        await page.GetByRole(AriaRole.Button, new() { Name = name, Exact = true }).ClickAsync();
        await page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).First.ClickAsync();
        await Expect(page.Locator("#connection")).ToHaveTextAsync("Live");
        await Expect(page.Locator("#me-name")).ToContainTextAsync(name);
    }

    private static async Task SendAsync(IPage page, string text)
    {
        var input = page.GetByLabel("Message", new() { Exact = true });
        await input.FillAsync(text);
        await input.PressAsync("Enter");
        await Expect(Message(page, text)).ToBeVisibleAsync();
        await Expect(input).ToHaveValueAsync("");
    }

    private static ILocator Message(IPage page, string text) =>
        page.Locator("#messages > li").Filter(new() { Has = page.Locator(".body", new() { HasTextRegex = new Regex($"^{Regex.Escape(text)}$") }) });

    /// <summary>Both sides show the same messages, each once, in sequence order.</summary>
    private static async Task AssertSameMessagesAsync(IPage alice, IPage bob)
    {
        const string read = "() => [...document.querySelectorAll('#messages > li')].map(li => li.dataset.id + '@' + li.dataset.seq)";
        var expected = await alice.EvaluateAsync<string[]>(read);
        await Expect(bob.Locator("#messages > li")).ToHaveCountAsync(expected.Length);
        var actual = await bob.EvaluateAsync<string[]>(read);
        Assert.Equal(expected, actual);
        Assert.Equal(actual.Length, actual.Distinct().Count());
        var seqs = actual.Select(entry => long.Parse(entry.Split('@')[1])).ToArray();
        Assert.Equal(seqs.Order(), seqs);
    }
}
