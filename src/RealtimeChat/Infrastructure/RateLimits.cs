using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;
using Prometheus;
using RealtimeChat.Messages;

namespace RealtimeChat.Infrastructure;

/// <summary>What a request costs against: each class has its own budget per user, so a flood of one kind of write
/// leaves the user's (and everyone else's) other operations alone.</summary>
public enum RateLimitClass
{
    Sends,
    Edits,
    Conversations,
    Uploads,
    ReadMarkers,
    Reads,
}

/// <summary>Endpoint metadata naming the budget an endpoint draws on.</summary>
public sealed record RateLimitClassMetadata(RateLimitClass Class);

/// <summary>A token bucket: <see cref="Burst"/> requests at once, refilled at <see cref="PerSecond"/>.</summary>
public sealed class RateLimitRule
{
    public RateLimitRule()
    {
    }

    public RateLimitRule(double perSecond, int burst)
    {
        PerSecond = perSecond;
        Burst = burst;
    }

    /// <summary>Refill rate; below 1 a single token comes back every 1/PerSecond seconds.</summary>
    public double PerSecond { get; set; }

    public int Burst { get; set; }
}

public sealed class RateLimitOptions : IValidatableObject
{
    public const string Section = "RateLimits";

    /// <summary>Edits, deletes and reactions.</summary>
    public RateLimitRule Edits { get; set; } = new(10, 30);

    /// <summary>Creating conversations, renaming them and every membership change (add, role, remove, leave).</summary>
    public RateLimitRule Conversations { get; set; } = new(1, 20);

    /// <summary>Media uploads (each can be tens of MB of encryption and storage work).</summary>
    public RateLimitRule Uploads { get; set; } = new(2, 10);

    /// <summary>
    /// An upload costs one unit of <see cref="Uploads"/> plus one per started multiple of this many bytes past the
    /// first: counted alone, 2 uploads a second of the largest file allowed let one user write 50 MiB/s to the
    /// service's disk and take its cores from everyone else's messages.
    /// </summary>
    [Range(typeof(long), "1024", "1099511627776")]
    public long UploadBytesPerPermit { get; set; } = 1024 * 1024;

    public RateLimitRule ReadMarkers { get; set; } = new(10, 30);

    /// <summary>Every GET under /api and WebSocket connects: looser, but still bounded.</summary>
    public RateLimitRule Reads { get; set; } = new(50, 200);

    /// <summary>
    /// How long a refusal is held before it is answered. A client that retries at once (a flood keeping requests in
    /// flight) then sends a few requests per second instead of thousands, each of which costs a token check, a
    /// refusal and CPU the other users need. Zero answers at once.
    /// </summary>
    public TimeSpan RejectionDelay { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// Writes of one class (every class but reads) of one user processed at once; more wait their turn. A burst that
    /// the budgets allow (30 edits at once) then reaches the database a few at a time instead of taking every core and
    /// connection while other users' sends wait behind it. Per class, so that uploads crawling over a slow link do not
    /// hold up the same user's messages.
    /// </summary>
    [Range(1, 1000)]
    public int ConcurrentWrites { get; set; } = 4;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (RejectionDelay < TimeSpan.Zero || RejectionDelay > TimeSpan.FromSeconds(10))
        {
            yield return new ValidationResult("RateLimits:RejectionDelay must be between 00:00:00 and 00:00:10.", [nameof(RejectionDelay)]);
        }
        foreach (var (name, rule) in new[] { ("Edits", Edits), ("Conversations", Conversations), ("Uploads", Uploads), ("ReadMarkers", ReadMarkers), ("Reads", Reads) })
        {
            if (rule.PerSecond is not (>= 0.001 and <= 1_000_000))
            {
                yield return new ValidationResult($"RateLimits:{name}:PerSecond must be between 0.001 and 1000000.", [name]);
            }
            if (rule.Burst is < 1 or > 1_000_000)
            {
                yield return new ValidationResult($"RateLimits:{name}:Burst must be between 1 and 1000000.", [name]);
            }
        }
    }
}

/// <summary>
/// Per-user token buckets by <see cref="RateLimitClass"/>, run by ASP.NET Core's rate limiting middleware as its
/// global limiter, and the <c>X-RateLimit-*</c> headers that tell clients where they stand.
/// </summary>
public sealed class ChatRateLimits
{
    public static readonly Counter Rejected = Prometheus.Metrics.CreateCounter(
        "chat_rate_limited_total", "Requests refused with 429, by rate limit class.", "class");

    private readonly Dictionary<RateLimitClass, RateLimitRule> _rules;
    // Refusals held at once, all users together: past it a refusal is answered at once, so holding stays bounded.
    private const int MaxHeldRejections = 2000;
    // Writes of one user waiting for a turn; past it a write is refused. The budgets already bound what a user can have
    // accepted at once, so only a client keeping hundreds of writes in flight gets here.
    private const int MaxQueuedWrites = 256;
    private readonly TimeSpan _rejectionDelay;
    private readonly PartitionedRateLimiter<PartitionKey> _buckets;
    private readonly PartitionedRateLimiter<PartitionKey> _writeTurns;
    private readonly int _concurrentWrites;
    private readonly long _uploadBytesPerPermit;
    private int _held;

    public ChatRateLimits(IOptions<RateLimitOptions> options, IOptions<MessageOptions> messages)
    {
        var limits = options.Value;
        _rejectionDelay = limits.RejectionDelay;
        _rules = new()
        {
            // Sends keep their original keys (Messages:SendsPerSecond / SendBurst).
            [RateLimitClass.Sends] = new(messages.Value.SendsPerSecond, messages.Value.SendBurst),
            [RateLimitClass.Edits] = limits.Edits,
            [RateLimitClass.Conversations] = limits.Conversations,
            [RateLimitClass.Uploads] = limits.Uploads,
            [RateLimitClass.ReadMarkers] = limits.ReadMarkers,
            [RateLimitClass.Reads] = limits.Reads,
        };
        _concurrentWrites = limits.ConcurrentWrites;
        _uploadBytesPerPermit = limits.UploadBytesPerPermit;
        _writeTurns = PartitionedRateLimiter.Create<PartitionKey, PartitionKey>(key => RateLimitPartition.GetConcurrencyLimiter(key, _ => new ConcurrencyLimiterOptions
        {
            PermitLimit = _concurrentWrites,
            QueueLimit = MaxQueuedWrites,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
        }));
        _buckets = PartitionedRateLimiter.Create<PartitionKey, PartitionKey>(key => key == PartitionKey.None
            ? RateLimitPartition.GetNoLimiter(key)
            : RateLimitPartition.GetTokenBucketLimiter(key, k => BucketOptions(_rules[k.Class])));
        Limiter = _buckets.WithTranslatedKey<HttpContext>(context => Classify(context) ?? PartitionKey.None, leaveOpen: true);
    }

    public PartitionedRateLimiter<HttpContext> Limiter { get; }

    /// <summary>The units an upload of this many bytes costs beyond the one taken at the door.</summary>
    public int ExtraUploadPermits(long bytes) => (int)Math.Min(int.MaxValue, Math.Max(0, bytes - 1) / _uploadBytesPerPermit);

    /// <summary>
    /// Adds the headers to the answer of a request the limiter let through: how many remain and when the bucket is
    /// full. Set as the answer starts, so error answers (whose headers the exception handler clears) carry them too;
    /// by then the exception handler has also cleared the endpoint, so the bucket is the one classified now.
    /// </summary>
    public void AddHeaders(HttpContext context)
    {
        if (Classify(context) is not { } key)
        {
            return;
        }
        context.Response.OnStarting(() =>
        {
            SetHeaders(context.Response.Headers, _rules[key.Class], _buckets.GetStatistics(key)?.CurrentAvailablePermits ?? 0);
            return Task.CompletedTask;
        });
    }

    /// <summary>
    /// Waits for one of the user's write turns (<see cref="RateLimitOptions.ConcurrentWrites"/>). Called after the
    /// budget check, so a refused request never waits here.
    /// </summary>
    /// <returns>The turn to hold while the request runs: none for reads and anonymous calls; not acquired when the
    /// user has too many writes waiting (then answer <see cref="RejectWriteAsync"/>).</returns>
    public async ValueTask<RateLimitLease?> WaitForWriteTurnAsync(HttpContext context)
    {
        if (Classify(context) is not { Class: not RateLimitClass.Reads } key)
        {
            return null;
        }
        return await _writeTurns.AcquireAsync(key, 1, context.RequestAborted);
    }

    /// <summary>How many of the user's write turns are taken now, all classes (tests wait on it to know who holds a turn).</summary>
    internal long WriteTurnsTaken(Guid user) => Enum.GetValues<RateLimitClass>()
        .Sum(limitClass => _writeTurns.GetStatistics(new PartitionKey(limitClass, user)) is { } statistics
            ? _concurrentWrites - statistics.CurrentAvailablePermits
            : 0);

    public async Task RejectWriteAsync(HttpContext context)
    {
        var key = Classify(context);
        Rejected.WithLabels(key is { } k ? Label(k.Class) : "unknown").Inc();
        context.Response.Headers.RetryAfter = "1";
        await HoldAsync(context.RequestAborted);
        await Problems.Create(StatusCodes.Status429TooManyRequests, "rate_limited",
                "Too many writes in progress at once; retry after the Retry-After delay (1 s).")
            .ExecuteAsync(context);
    }

    /// <summary>
    /// Charges a request that does more than one unit of work (a group created with many members, a large upload) the rest of its
    /// cost, on top of the permit the middleware took.
    /// </summary>
    /// <returns>Null when charged; over budget, the 429 the middleware would have answered (headers already set).</returns>
    public Microsoft.AspNetCore.Http.HttpResults.ProblemHttpResult? ChargeExtra(HttpContext context, int permits)
    {
        if (permits <= 0 || Classify(context) is not { } key || _rules[key.Class] is not { Burst: > 1 } rule)
        {
            return null;
        }
        // With the unit taken at the door, at most the whole burst: the largest request allowed must be able to pass.
        using var lease = _buckets.AttemptAcquire(key, Math.Min(permits, rule.Burst - 1));
        SetHeaders(context.Response.Headers, rule, _buckets.GetStatistics(key)?.CurrentAvailablePermits ?? 0);
        if (lease.IsAcquired)
        {
            return null;
        }
        Rejected.WithLabels(Label(key.Class)).Inc();
        var retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromSeconds(1);
        var seconds = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
        context.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        return Problems.Create(StatusCodes.Status429TooManyRequests, "rate_limited",
            $"Too many {Describe(key.Class)}; retry after the Retry-After delay ({seconds} s).");
    }

    /// <summary>
    /// Takes permits of a user's budget for work that arrives outside a request of its own (a WebSocket frame that
    /// reads the database), so that it shares the budget of the REST calls of its class instead of going round it.
    /// </summary>
    /// <param name="retryAfter">When refused, how long until the permits may be there.</param>
    /// <returns>False over budget; counted in <c>chat_rate_limited_total</c> as a 429 is.</returns>
    public bool TryTake(Guid user, RateLimitClass limitClass, int permits, out TimeSpan retryAfter)
    {
        using var lease = _buckets.AttemptAcquire(new PartitionKey(limitClass, user), Math.Clamp(permits, 1, _rules[limitClass].Burst));
        if (lease.IsAcquired)
        {
            retryAfter = TimeSpan.Zero;
            return true;
        }
        Rejected.WithLabels(Label(limitClass)).Inc();
        retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromSeconds(1);
        return false;
    }

    public async ValueTask OnRejectedAsync(OnRejectedContext rejected, CancellationToken cancellationToken)
    {
        var context = rejected.HttpContext;
        var key = Classify(context);
        // A counter, not a log line: a flood of refusals must not become a flood of logs.
        Rejected.WithLabels(key is { } k ? Label(k.Class) : "unknown").Inc();
        var retryAfter = rejected.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromSeconds(1);
        var seconds = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
        context.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        if (key is { } known)
        {
            SetHeaders(context.Response.Headers, _rules[known.Class], 0);
        }
        await HoldAsync(cancellationToken);
        await Problems.Create(StatusCodes.Status429TooManyRequests, "rate_limited",
                $"Too many {Describe(key?.Class)}; retry after the Retry-After delay ({seconds} s).")
            .ExecuteAsync(context);
    }

    private async Task HoldAsync(CancellationToken cancellationToken)
    {
        if (_rejectionDelay <= TimeSpan.Zero)
        {
            return;
        }
        try
        {
            if (Interlocked.Increment(ref _held) <= MaxHeldRejections)
            {
                await Task.Delay(_rejectionDelay, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
            // The client went away while held: nothing to answer.
        }
        finally
        {
            Interlocked.Decrement(ref _held);
        }
    }

    private static PartitionKey? Classify(HttpContext context)
    {
        if (!Guid.TryParse(context.User.FindFirst("sub")?.Value, out var userId))
        {
            return null;
        }
        var metadata = context.GetEndpoint()?.Metadata.GetMetadata<RateLimitClassMetadata>();
        if (metadata is not null)
        {
            return new PartitionKey(metadata.Class, userId);
        }
        return context.Request.Path.StartsWithSegments("/api") && (HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method))
            ? new PartitionKey(RateLimitClass.Reads, userId)
            : null;
    }

    private static TokenBucketRateLimiterOptions BucketOptions(RateLimitRule rule)
    {
        var (tokens, period) = Refill(rule);
        return new TokenBucketRateLimiterOptions
        {
            TokenLimit = rule.Burst,
            TokensPerPeriod = tokens,
            ReplenishmentPeriod = period,
            QueueLimit = 0,
            AutoReplenishment = true,
        };
    }

    private static (int Tokens, TimeSpan Period) Refill(RateLimitRule rule) => rule.PerSecond >= 1
        ? ((int)Math.Round(rule.PerSecond), TimeSpan.FromSeconds(1))
        : (1, TimeSpan.FromSeconds(1 / rule.PerSecond));

    private static void SetHeaders(IHeaderDictionary headers, RateLimitRule rule, long available)
    {
        var (tokens, period) = Refill(rule);
        var missing = Math.Max(0, rule.Burst - available);
        var untilFull = Math.Ceiling(Math.Ceiling((double)missing / tokens) * period.TotalSeconds);
        headers["X-RateLimit-Limit"] = rule.Burst.ToString(CultureInfo.InvariantCulture);
        headers["X-RateLimit-Remaining"] = available.ToString(CultureInfo.InvariantCulture);
        headers["X-RateLimit-Reset"] = untilFull.ToString(CultureInfo.InvariantCulture);
    }

    private static string Label(RateLimitClass limitClass) => limitClass switch
    {
        RateLimitClass.ReadMarkers => "read_markers",
        _ => limitClass.ToString().ToLowerInvariant(),
    };

    private static string Describe(RateLimitClass? limitClass) => limitClass switch
    {
        RateLimitClass.Sends => "messages",
        RateLimitClass.Edits => "edits, deletes and reactions",
        RateLimitClass.Conversations => "conversation and membership changes",
        RateLimitClass.Uploads => "uploads",
        RateLimitClass.ReadMarkers => "read marker updates",
        RateLimitClass.Reads => "reads",
        _ => "requests",
    };

    private readonly record struct PartitionKey(RateLimitClass Class, Guid User)
    {
        // Shared by every request that is not limited (no user, or not an API call).
        public static readonly PartitionKey None = new((RateLimitClass)(-1), Guid.Empty);
    }
}

public static class RateLimitSetup
{
    public static IServiceCollection AddChatRateLimits(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<RateLimitOptions>().Bind(configuration.GetSection(RateLimitOptions.Section)).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<ChatRateLimits>();
        services.AddRateLimiter(_ => { });
        services.AddOptions<RateLimiterOptions>().Configure<ChatRateLimits>((limiter, limits) =>
        {
            limiter.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            limiter.GlobalLimiter = limits.Limiter;
            limiter.OnRejected = limits.OnRejectedAsync;
        });
        return services;
    }

    /// <summary>
    /// The limiter, then the headers on what it let through and the user's write turns. Needs the authenticated user,
    /// so after authentication.
    /// </summary>
    public static IApplicationBuilder UseChatRateLimits(this IApplicationBuilder app)
    {
        app.UseRateLimiter();
        var limits = app.ApplicationServices.GetRequiredService<ChatRateLimits>();
        return app.Use(async (context, next) =>
        {
            limits.AddHeaders(context);
            using var turn = await limits.WaitForWriteTurnAsync(context);
            if (turn is { IsAcquired: false })
            {
                await limits.RejectWriteAsync(context);
                return;
            }
            await next(context);
        });
    }

    public static TBuilder RateLimited<TBuilder>(this TBuilder builder, RateLimitClass limitClass) where TBuilder : IEndpointConventionBuilder =>
        builder.WithMetadata(new RateLimitClassMetadata(limitClass));
}
