// Package diskfault is a FUSE passthrough filesystem that simulates power
// loss: it forgets every write that was not made durable, on command.
//
// A process killed with SIGKILL keeps everything it wrote, because the
// kernel's page cache survives it; a durability claim tested only with
// kill -9 cannot see a missing fsync. Mount a store directory through this
// package instead, and PowerCut leaves the backing directory holding exactly
// what a machine would find on its disk after the power came back.
//
// # Durability model
//
// Every write goes straight through to the backing directory, so readers
// see it at once (page-cache semantics). Next to it the filesystem keeps an
// undo log of everything not yet durable; PowerCut replays the undo log and
// then refuses every further operation with EIO until Unmount, as a machine
// without power would.
//
// File data (write, truncate, fallocate, the size of the file):
//   - durable after fsync or fdatasync of that file, through any descriptor;
//     both commit all of the file's data (fdatasync is treated as fsync);
//   - a write through a descriptor opened with O_SYNC or O_DSYNC is durable
//     when it returns; the kernel follows it with a FUSE fsync that carries
//     no byte range, so it commits the whole file like fsync (ext4 would
//     flush only the written range: here slightly more survives);
//   - close, flush, sync(2) and syncfs(2) make nothing durable;
//   - a write that was never synced disappears whole: there are no torn
//     writes and no partial page write-back, so the model is the worst case
//     of a kernel that never wrote dirty pages back.
//
// Metadata (create, mkdir, mknod, symlink, link, unlink, rmdir, rename)
// follows Options.MetadataDurable:
//   - MetadataImmediate (default, "immediate"): durable when the call returns,
//     like a journaling filesystem (ext4, xfs) in practice, and like Jepsen's
//     lazyfs, which applies namespace operations to its backing filesystem at
//     once and buffers only file data. A file created and written but never
//     fsynced survives a cut with length 0.
//   - MetadataDirFsync ("dir-fsync"): the POSIX-strict model. A directory's
//     entries are durable only after an fsync of that directory: a new file
//     whose data was fsynced but whose directory was not vanishes; an unlink
//     or rename comes back. A rename between two directories is two halves,
//     each durable with its own directory's fsync; if only the target half is
//     durable, a file keeps both names (a directory keeps the new one, since
//     directories cannot have two). fsync of a file does not make its
//     directory entry durable (ext4 happens to; POSIX does not promise it).
//
// Attributes other than the size (mode, owner, times, xattrs) are applied at
// once and never rolled back.
//
// Compared with lazyfs: lazyfs keeps unsynced data in its own page cache and
// writes it to the backing filesystem on fsync; this package writes through
// and keeps an undo log, so the backing directory holds the visible state
// while mounted and the durable state after a cut. Both treat namespace
// operations as immediate by default; only this package offers the strict
// directory-fsync model. lazyfs can also tear a write or crash at a given
// operation; this package cuts only on command, atomically across every FS
// passed to PowerCut.
//
// In dir-fsync mode removed entries are parked in a hidden directory
// (StashName) in the backing root, so they can be brought back by a cut; it is
// invisible through the mount and deleted by PowerCut.
package diskfault
