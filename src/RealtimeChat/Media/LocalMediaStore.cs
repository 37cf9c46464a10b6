using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;
using RealtimeChat.Storage;

namespace RealtimeChat.Media;

/// <summary>One file per object under a local directory; keys may contain '/' for sub-directories.</summary>
public sealed class LocalMediaStore : IMediaStore
{
    private const int BufferSize = 64 * 1024;
    private readonly string _root;

    public LocalMediaStore(IOptions<MediaOptions> options, IOptions<StorageOptions> storage)
    {
        _root = Path.GetFullPath(options.Value.LocalDirectory ?? Path.Combine(storage.Value.DataDirectory, "media"));
        Infrastructure.StartupErrors.CreateDirectory(_root, options.Value.LocalDirectory is null ? "Storage:DataDirectory" : "Media:LocalDirectory");
    }

    public async Task WriteAsync(string storageKey, Func<Stream, CancellationToken, Task> writeContent, CancellationToken cancellationToken)
    {
        var path = PathOf(storageKey);
        var directory = Path.GetDirectoryName(path)!;
        var newDirectory = !Directory.Exists(directory);
        Directory.CreateDirectory(directory);
        // Written under a temporary name and renamed once complete, so a reader never sees a partial object.
        var temporary = $"{path}.{Guid.NewGuid():N}.partial";
        try
        {
            await using (var file = new FileStream(temporary, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                Options = FileOptions.Asynchronous,
                BufferSize = BufferSize,
            }))
            {
                await writeContent(file, cancellationToken);
                await file.FlushAsync(cancellationToken);
                // The message that points at this file commits next; the file must survive a crash from then on.
                await OnOwnThreadAsync(() => file.Flush(flushToDisk: true), cancellationToken);
            }
            File.Move(temporary, path);
            // The rename (and a new sub-directory) are changes to directories, which the file's own fsync does not make
            // durable: without this, a crash soon after the message commits could leave the object under its
            // temporary name, which the sweeper then deletes.
            await OnOwnThreadAsync(() =>
            {
                SyncDirectory(directory);
                if (newDirectory)
                {
                    SyncDirectory(_root);
                }
            }, CancellationToken.None);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    public Task<Stream> OpenReadAsync(string storageKey, long offset, CancellationToken cancellationToken)
    {
        var file = new FileStream(PathOf(storageKey), new FileStreamOptions
        {
            Mode = FileMode.Open,
            Access = FileAccess.Read,
            Share = FileShare.Read | FileShare.Delete,
            Options = FileOptions.Asynchronous,
            BufferSize = 0,
        });
        file.Seek(offset, SeekOrigin.Begin);
        return Task.FromResult<Stream>(file);
    }

    public Task DeleteAsync(string storageKey, CancellationToken cancellationToken)
    {
        try
        {
            File.Delete(PathOf(storageKey));
        }
        catch (DirectoryNotFoundException)
        {
            // Never written: nothing to delete.
        }
        return Task.CompletedTask;
    }

    public async IAsyncEnumerable<StoredObject> ListAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await Task.Yield();
        foreach (var path in Directory.EnumerateFiles(_root, "*", SearchOption.AllDirectories))
        {
            cancellationToken.ThrowIfCancellationRequested();
            DateTime written;
            try
            {
                written = File.GetLastWriteTimeUtc(path);
            }
            catch (IOException)
            {
                // Deleted while listing.
                continue;
            }
            var key = Path.GetRelativePath(_root, path).Replace(Path.DirectorySeparatorChar, '/');
            yield return new StoredObject(key, new DateTimeOffset(written, TimeSpan.Zero));
        }
    }

    /// <summary>
    /// fsync blocks its thread for as long as the disk takes (stalls of 0.1-2 s measured on shared VM disks,
    /// docs/performance.md). On a thread of its own, a few uploads waiting out a stall cannot take the thread pool's few
    /// workers (one per core) from every other request.
    /// </summary>
    private static Task OnOwnThreadAsync(Action flush, CancellationToken cancellationToken) =>
        Task.Factory.StartNew(flush, cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>fsync of a directory, which .NET cannot open as a file.</summary>
    private static void SyncDirectory(string directory)
    {
        if (OperatingSystem.IsWindows())
        {
            // NTFS journals directory changes itself, and Windows cannot flush a directory handle.
            return;
        }
        var descriptor = Posix.Open(directory, 0 /* O_RDONLY */);
        if (descriptor < 0)
        {
            throw new IOException($"Could not open {directory} to flush it (errno {Marshal.GetLastPInvokeError()}).");
        }
        try
        {
            if (Posix.Fsync(descriptor) != 0)
            {
                throw new IOException($"Could not flush {directory} (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = Posix.Close(descriptor);
        }
    }

    private static class Posix
    {
        [DllImport("libc", EntryPoint = "open", SetLastError = true)]
        public static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

        [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static extern int Fsync(int descriptor);

        [DllImport("libc", EntryPoint = "close")]
        public static extern int Close(int descriptor);
    }

    private string PathOf(string storageKey)
    {
        var path = Path.GetFullPath(Path.Combine(_root, storageKey));
        // Keys are generated by MediaService, but a key must never name a file outside the media directory.
        if (!path.StartsWith(_root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
        {
            throw new ArgumentException("The storage key leaves the media directory.", nameof(storageKey));
        }
        return path;
    }
}
