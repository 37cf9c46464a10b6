using Microsoft.Extensions.Caching.Memory;

namespace RealtimeChat.Infrastructure;

/// <summary>
/// What this process remembers of rows the database holds, bounded: a service that runs for weeks keeps the users and
/// rooms it meets often, not every one it ever met, and a row that another instance changed is read again once its entry
/// expires. A miss only costs a read.
/// </summary>
public sealed class RowCache<TKey, TValue> : IDisposable where TKey : notnull
{
    private readonly MemoryCache _cache;
    private readonly MemoryCacheEntryOptions _entry;

    /// <param name="capacity">Entries kept at most: past it the cache is compacted, the least recently used first, and an
    /// entry set before that is done may not be kept.</param>
    /// <param name="lifetime">How long an entry is trusted.</param>
    /// <param name="renewedOnUse">Whether each use starts its lifetime again (rows no one else changes).</param>
    public RowCache(int capacity, TimeSpan lifetime, bool renewedOnUse)
    {
        _cache = new MemoryCache(new MemoryCacheOptions { SizeLimit = capacity });
        _entry = renewedOnUse
            ? new MemoryCacheEntryOptions { Size = 1, SlidingExpiration = lifetime }
            : new MemoryCacheEntryOptions { Size = 1, AbsoluteExpirationRelativeToNow = lifetime };
    }

    public bool TryGet(TKey key, out TValue? value) => _cache.TryGetValue(key, out value);

    public bool Contains(TKey key) => _cache.TryGetValue(key, out _);

    public void Set(TKey key, TValue? value) => _cache.Set(key, value, _entry);

    public void Dispose() => _cache.Dispose();
}
