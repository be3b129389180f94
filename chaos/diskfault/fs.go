package diskfault

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MetadataMode says when namespace operations become durable.
type MetadataMode string

const (
	// MetadataImmediate: creates, renames and unlinks are durable when they
	// return (ext4/xfs in practice, lazyfs).
	MetadataImmediate MetadataMode = "immediate"
	// MetadataDirFsync: they are durable only after an fsync of the
	// directory holding the entry (POSIX-strict).
	MetadataDirFsync MetadataMode = "dir-fsync"
)

// StashName is the hidden directory in the backing root where dir-fsync
// mode parks removed entries until a cut or until no directory needs them.
const StashName = ".diskfault-stash"

// Options configures a mount.
type Options struct {
	MetadataDurable MetadataMode // default MetadataImmediate
	Debug           bool         // log every FUSE request
}

// FS is one mounted passthrough filesystem.
type FS struct {
	backing, mountpoint string
	mode                MetadataMode
	server              *fuse.Server

	// gate: every operation holds it shared; PowerCut holds it exclusively,
	// so a cut falls between operations, never inside one.
	gate sync.RWMutex
	dead bool // after a cut: every operation fails with EIO

	mu        sync.Mutex // the undo log
	files     map[inodeKey]*fileUndo
	dirs      map[inodeKey]*dirUndo
	stash     int // descriptor of the stash directory, -1 until needed
	unmounted bool
}

// Stats counts what a cut threw away.
type Stats struct {
	Files          int   // files whose unsynced data was dropped
	Bytes          int64 // unsynced bytes dropped: past the durable size, plus durable bytes written back
	EntriesDropped int   // dir-fsync: directory entries that were never durable
	EntriesBack    int   // dir-fsync: durable entries brought back
	EntriesLost    int   // dir-fsync: durable entries that could not be brought back (a directory renamed away)
}

// Available says why FUSE mounts cannot work here, or nil.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("FUSE unavailable: /dev/fuse: %w", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("FUSE unavailable: fusermount3 not found (apt-get install fuse3)")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("FUSE unavailable: open /dev/fuse: %w", err)
	}
	_ = f.Close()
	return nil
}

// Mount serves backing at mountpoint (both must exist, mountpoint empty).
func Mount(backing, mountpoint string, o Options) (*FS, error) {
	switch o.MetadataDurable {
	case "":
		o.MetadataDurable = MetadataImmediate
	case MetadataImmediate, MetadataDirFsync:
	default:
		return nil, fmt.Errorf("diskfault: MetadataDurable %q: want %q or %q", o.MetadataDurable, MetadataImmediate, MetadataDirFsync)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	if err := unix.Access(backing, unix.W_OK); err != nil {
		return nil, fmt.Errorf("diskfault: backing dir %s: %w", backing, err)
	}
	// A stash left by a process that died before its cut holds only
	// entries removed through the mount: gone for good.
	if err := os.RemoveAll(filepath.Join(backing, StashName)); err != nil {
		return nil, fmt.Errorf("diskfault: clear old stash: %w", err)
	}
	f := &FS{backing: backing, mountpoint: mountpoint, mode: o.MetadataDurable,
		files: map[inodeKey]*fileUndo{}, dirs: map[inodeKey]*dirUndo{}, stash: -1}
	lr, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("diskfault: %w", err)
	}
	root := &node{LoopbackNode: lr.(*fs.LoopbackNode), f: f}
	// No kernel caching of names or attributes: after a cut the kernel must
	// not answer from what the filesystem has since forgotten.
	zero := time.Duration(0)
	opts := &fs.Options{EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero}
	opts.FsName = "diskfault:" + backing
	opts.Name = "diskfault"
	opts.Debug = o.Debug
	opts.DisableXAttrs = true
	server, err := fs.Mount(mountpoint, root, opts)
	if err != nil {
		return nil, fmt.Errorf("diskfault: mount %s: %w", mountpoint, err)
	}
	f.server = server
	return f, nil
}

// Backing is the directory the mount passes through to.
func (f *FS) Backing() string { return f.backing }

// Mountpoint is where the filesystem is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Mode is the metadata durability model in force.
func (f *FS) Mode() MetadataMode { return f.mode }

// Unmount detaches the filesystem. Unsynced writes stay in the backing
// directory unless PowerCut ran first (an orderly shutdown, not a crash).
func (f *FS) Unmount() error {
	f.mu.Lock()
	gone := f.unmounted
	f.unmounted = true
	f.mu.Unlock()
	if gone {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = f.server.Unmount(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // busy: a killed process is still closing files
	}
	if err != nil {
		f.mu.Lock()
		f.unmounted = false
		f.mu.Unlock()
		return fmt.Errorf("diskfault: unmount %s: %w", f.mountpoint, err)
	}
	f.server.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget()
	// Without a cut, parked entries were removed for good.
	return os.RemoveAll(filepath.Join(f.backing, StashName))
}

// PowerCut drops every write not yet durable, atomically: no operation runs
// between the first and the last filesystem being cut, and afterwards every
// operation fails with EIO until Unmount. The backing directories then hold
// exactly the durable state.
func PowerCut(fss ...*FS) ([]Stats, error) {
	for _, f := range fss {
		f.gate.Lock()
	}
	defer func() {
		for _, f := range fss {
			f.gate.Unlock()
		}
	}()
	out := make([]Stats, len(fss))
	var errs []error
	for i, f := range fss {
		f.dead = true
		s, err := f.revert()
		out[i] = s
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.backing, err))
		}
	}
	return out, errors.Join(errs...)
}

// PowerCut cuts this filesystem alone.
func (f *FS) PowerCut() (Stats, error) {
	s, err := PowerCut(f)
	return s[0], err
}

// Checkpoint makes everything visible now durable, as the kernel's
// periodic write-back and journal commit eventually would (lazyfs has the
// same command). A reproducer uses it to say "this state is old enough to be
// on disk", so a cut tests only what happened after it.
func (f *FS) Checkpoint() error {
	done, errno := f.enter()
	if errno != 0 {
		return fmt.Errorf("diskfault: checkpoint: %w", errno)
	}
	defer done()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forget()
	return os.RemoveAll(filepath.Join(f.backing, StashName))
}

// Pending counts what a cut would drop right now: dirty files and, in
// dir-fsync mode, directories with unsynced entries.
func (f *FS) Pending() (files, dirs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.files), len(f.dirs)
}

// enter admits an operation unless the power is off.
func (f *FS) enter() (func(), syscall.Errno) {
	f.gate.RLock()
	if f.dead {
		f.gate.RUnlock()
		return nil, syscall.EIO
	}
	return f.gate.RUnlock, 0
}

// track returns the undo record of the file open at fd, starting one if the
// file is clean (then its visible content is its durable content).
func (f *FS) track(fd int) (*fileUndo, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	k := keyOf(&st)
	if u := f.files[k]; u != nil {
		return u, nil
	}
	// Our own descriptor, read-write even if the app's is write-only, and
	// still valid after the app closes or unlinks the file.
	own, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen for undo: %w", err)
	}
	u := &fileUndo{fd: own, size: st.Size}
	f.files[k] = u
	return u, nil
}

// commit makes all of a file's data durable (fsync, fdatasync).
func (f *FS) commit(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	k := keyOf(&st)
	if u := f.files[k]; u != nil {
		_ = unix.Close(u.fd)
		delete(f.files, k)
	}
	return nil
}

// noteDir records dir's durable entries before its first unsynced change
// (dir-fsync mode; no-op otherwise).
func (f *FS) noteDir(path string) error {
	if f.mode != MetadataDirFsync {
		return nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return err
	}
	k := keyOf(&st)
	if f.dirs[k] != nil {
		_ = unix.Close(fd)
		return nil
	}
	entries, err := listDir(fd)
	if err != nil {
		_ = unix.Close(fd)
		return err
	}
	if path == f.backing {
		delete(entries, StashName)
	}
	f.dirs[k] = &dirUndo{fd: fd, path: path, entries: entries}
	return nil
}

// commitDir makes a directory's entries durable (fsync of the directory).
func (f *FS) commitDir(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	k := keyOf(&st)
	if d := f.dirs[k]; d != nil {
		_ = unix.Close(d.fd)
		delete(f.dirs, k)
	}
	if len(f.dirs) == 0 && f.stash >= 0 {
		// No directory can ask for a parked entry back any more.
		_ = unix.Close(f.stash)
		f.stash = -1
		_ = os.RemoveAll(filepath.Join(f.backing, StashName))
	}
	return nil
}

func (f *FS) stashFd() (int, error) {
	if f.stash >= 0 {
		return f.stash, nil
	}
	p := filepath.Join(f.backing, StashName)
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return -1, err
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	f.stash = fd
	return fd, nil
}

// park moves dir/name into the stash instead of deleting it, so a cut can
// bring it back. A second name of an already parked file is just unlinked.
func (f *FS) park(dirfd int, name string) error {
	s, err := f.stashFd()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	id := strconv.FormatUint(st.Ino, 10)
	if err := unix.Fstatat(s, id, &unix.Stat_t{}, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return unix.Unlinkat(dirfd, name, 0)
	}
	return unix.Renameat(dirfd, name, s, id)
}

// keep hard-links a file into the stash before a rename moves it, so the
// source directory can get it back if only the target is synced.
func (f *FS) keep(dirfd int, name string) error {
	s, err := f.stashFd()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	id := strconv.FormatUint(st.Ino, 10)
	if err := unix.Fstatat(s, id, &unix.Stat_t{}, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return nil
	}
	return unix.Linkat(dirfd, name, s, id, 0)
}

// revert replays the undo log. Caller holds the gate exclusively.
func (f *FS) revert() (Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	s := Stats{}
	// Data first, through our own descriptors: names do not matter yet.
	for _, u := range f.files {
		s.Files++
		var st unix.Stat_t
		if unix.Fstat(u.fd, &st) == nil && st.Size > u.size {
			s.Bytes += st.Size - u.size
		}
		s.Bytes += u.bytes()
		if err := u.restore(); err != nil {
			errs = append(errs, err)
		}
	}
	if f.mode == MetadataDirFsync && len(f.dirs) > 0 {
		stash, err := f.stashFd()
		if err != nil {
			errs = append(errs, err)
		} else {
			// Entries that were never durable go to the stash (and from
			// there, nowhere).
			for _, d := range f.dirs {
				cur, err := listDir(d.fd)
				if err != nil {
					errs = append(errs, fmt.Errorf("list %s: %w", d.path, err))
					continue
				}
				for name, e := range cur {
					if d.path == f.backing && name == StashName {
						continue
					}
					if old, ok := d.entries[name]; ok && old.ino == e.ino {
						continue
					}
					s.EntriesDropped++
					if err := f.park(d.fd, name); err != nil {
						errs = append(errs, fmt.Errorf("drop %s/%s: %w", d.path, name, err))
					}
				}
			}
			// Durable entries come back from the stash.
			for _, d := range f.dirs {
				cur, err := listDir(d.fd)
				if err != nil {
					continue
				}
				for name, e := range d.entries {
					if _, ok := cur[name]; ok {
						continue
					}
					id := strconv.FormatUint(e.ino, 10)
					var st unix.Stat_t
					if err := unix.Fstatat(stash, id, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
						s.EntriesLost++
						continue
					}
					if st.Mode&unix.S_IFMT == unix.S_IFDIR {
						err = unix.Renameat(stash, id, d.fd, name)
					} else {
						err = unix.Linkat(stash, id, d.fd, name, 0)
					}
					if err != nil {
						errs = append(errs, fmt.Errorf("restore %s/%s: %w", d.path, name, err))
						continue
					}
					s.EntriesBack++
				}
			}
		}
	}
	f.forget()
	_ = os.RemoveAll(filepath.Join(f.backing, StashName))
	return s, errors.Join(errs...)
}

// forget closes every undo descriptor. Caller holds mu.
func (f *FS) forget() {
	for k, u := range f.files {
		_ = unix.Close(u.fd)
		delete(f.files, k)
	}
	for k, d := range f.dirs {
		_ = unix.Close(d.fd)
		delete(f.dirs, k)
	}
	if f.stash >= 0 {
		_ = unix.Close(f.stash)
		f.stash = -1
	}
}
