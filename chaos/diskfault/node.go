package diskfault

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a LoopbackNode whose every change goes through the undo log. Each
// operation that can change what is on disk is overridden here; the rest
// (lookup, getattr, readlink, statfs) only read.
type node struct {
	*fs.LoopbackNode
	f *FS
}

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), f: n.f}
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.FileWriter         = (*file)(nil)
	_ fs.FileFsyncer        = (*file)(nil)
	_ fs.FileSetattrer      = (*file)(nil)
	_ fs.FileAllocater      = (*file)(nil)
	_ fs.FileFsyncdirer     = (*dir)(nil)
	_ fs.FileReaddirenter   = (*dir)(nil)
	_ fs.FileReleasedirer   = (*dir)(nil)
	_ fs.FileSeekdirer      = (*dir)(nil)
)

func (n *node) path() string { return filepath.Join(n.f.backing, n.Path(nil)) }

func (n *node) isRoot() bool { return n.Path(nil) == "" }

// Lookup hides the stash.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == StashName && n.isRoot() {
		return nil, syscall.ENOENT
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

// Open tracks O_TRUNC as a data change and remembers O_SYNC/O_DSYNC.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	done, errno := n.f.enter()
	if errno != 0 {
		return nil, 0, errno
	}
	defer done()
	if flags&syscall.O_TRUNC != 0 {
		if errno := n.f.truncatePath(n.path(), 0); errno != 0 {
			return nil, 0, errno
		}
	}
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.f.wrap(fh, flags), ff, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	done, errno := n.f.enter()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer done()
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if errno := n.f.noteDirErr(n.path()); errno != 0 {
		return nil, nil, 0, errno
	}
	p := filepath.Join(n.path(), name)
	if flags&syscall.O_TRUNC != 0 {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			if errno := n.f.truncatePathLocked(p, 0); errno != 0 {
				return nil, nil, 0, errno
			}
		}
	}
	ch, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.f.wrap(fh, flags), ff, 0
}

// Setattr: a size change is file data; other attributes apply at once.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	done, errno := n.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	if fl, ok := fh.(*file); ok {
		return fl.setattr(ctx, in, out)
	}
	if sz, ok := in.GetSize(); ok {
		if errno := n.f.truncatePath(n.path(), int64(sz)); errno != 0 {
			return errno
		}
	}
	return n.LoopbackNode.Setattr(ctx, nil, in, out)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	done, errno := n.nsEnter()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	done, errno := n.nsEnter()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	return n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	done, errno := n.nsEnter()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	done, errno := n.nsEnter()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, false)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, true)
}

func (n *node) remove(ctx context.Context, name string, isDir bool) syscall.Errno {
	done, errno := n.nsEnter()
	if errno != 0 {
		return errno
	}
	defer done()
	if n.f.mode != MetadataDirFsync {
		if isDir {
			return n.LoopbackNode.Rmdir(ctx, name)
		}
		return n.LoopbackNode.Unlink(ctx, name)
	}
	dfd, err := unix.Open(n.path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	isDirNow := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case isDir && !isDirNow:
		return syscall.ENOTDIR
	case !isDir && isDirNow:
		return syscall.EISDIR
	case isDir:
		cfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		ents, err := listDir(cfd)
		_ = unix.Close(cfd)
		if err != nil {
			return fs.ToErrno(err)
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	// Park instead of delete: the durable directory may still name it.
	return fs.ToErrno(n.f.park(dfd, name))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	done, errno := n.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.f.mode != MetadataDirFsync {
		return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	}
	if flags&^unix.RENAME_NOREPLACE != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE/WHITEOUT: not modelled
	}
	if errno := n.f.noteDirErr(n.path()); errno != 0 {
		return errno
	}
	if errno := n.f.noteDirErr(np.path()); errno != 0 {
		return errno
	}
	sfd, err := unix.Open(n.path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(sfd)
	tfd, err := unix.Open(np.path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(tfd)
	var src, dst unix.Stat_t
	if err := unix.Fstatat(sfd, name, &src, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	if err := unix.Fstatat(tfd, newName, &dst, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if dst.Ino == src.Ino {
			return n.LoopbackNode.Rename(ctx, name, newParent, newName, 0)
		}
		srcDir, dstDir := src.Mode&unix.S_IFMT == unix.S_IFDIR, dst.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case srcDir && !dstDir:
			return syscall.ENOTDIR
		case !srcDir && dstDir:
			return syscall.EISDIR
		case dstDir:
			cfd, err := unix.Openat(tfd, newName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fs.ToErrno(err)
			}
			ents, err := listDir(cfd)
			_ = unix.Close(cfd)
			if err != nil {
				return fs.ToErrno(err)
			}
			if len(ents) > 0 {
				return syscall.ENOTEMPTY
			}
		}
		// The replaced entry may be durable: park it rather than lose it.
		if err := n.f.park(tfd, newName); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := n.f.keep(sfd, name); err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(unix.Renameat(sfd, name, tfd, newName))
}

// nsEnter admits a namespace change in this directory and records the
// directory's durable entries first.
func (n *node) nsEnter() (func(), syscall.Errno) {
	done, errno := n.f.enter()
	if errno != 0 {
		return nil, errno
	}
	n.f.mu.Lock()
	if errno := n.f.noteDirErr(n.path()); errno != 0 {
		n.f.mu.Unlock()
		done()
		return nil, errno
	}
	return func() { n.f.mu.Unlock(); done() }, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, errno := fs.NewLoopbackDirStream(n.path())
	if errno != 0 {
		return nil, 0, errno
	}
	return &dir{ds: ds, n: n, hideStash: n.isRoot()}, 0, 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ds, errno := fs.NewLoopbackDirStream(n.path())
	if errno != 0 {
		return nil, errno
	}
	if !n.isRoot() {
		return ds, 0
	}
	var out []fuse.DirEntry
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			ds.Close()
			return nil, errno
		}
		if e.Name != StashName {
			out = append(out, e)
		}
	}
	ds.Close()
	return fs.NewListDirStream(out), 0
}

// Tmpfile (O_TMPFILE) is not modelled; callers fall back to a named file.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange: ENOSYS makes the kernel copy through read and write, which
// the undo log sees.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, l uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.ENOTSUP
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return syscall.ENOTSUP
}

// Fsync without a handle (the kernel sends one for every open file, so this
// is a fallback): commit through a fresh descriptor.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if fl, ok := fh.(*file); ok {
		return fl.Fsync(ctx, flags)
	}
	if d, ok := fh.(*dir); ok {
		return d.Fsyncdir(ctx, flags)
	}
	done, errno := n.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	fd, err := unix.Open(n.path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fs.ToErrno(err)
	}
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fs.ToErrno(n.f.commitDir(fd))
	}
	return fs.ToErrno(n.f.commit(fd))
}

func (f *FS) noteDirErr(path string) syscall.Errno {
	return fs.ToErrno(f.noteDir(path))
}

// truncatePath records a truncate by path as a data change, then does it.
func (f *FS) truncatePath(path string, size int64) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.truncatePathLocked(path, size)
}

func (f *FS) truncatePathLocked(path string, size int64) syscall.Errno {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(fd)
	return f.truncateFd(fd, size)
}

// truncateFd: caller holds mu.
func (f *FS) truncateFd(fd int, size int64) syscall.Errno {
	u, err := f.track(fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := u.save(size, u.size); err != nil {
		return syscall.EIO
	}
	return fs.ToErrno(unix.Ftruncate(fd, size))
}

// wrap puts the undo log between the app and a loopback file handle.
func (f *FS) wrap(fh fs.FileHandle, flags uint32) fs.FileHandle {
	lf := fh.(*fs.LoopbackFile)
	fd, _ := lf.PassthroughFd()
	return &file{lf: lf, fd: fd, f: f, sync: flags&(unix.O_SYNC|unix.O_DSYNC) != 0}
}

// file forwards reads and intercepts every write. It deliberately does not
// embed LoopbackFile: that implements FilePassthroughFder, and with kernel
// passthrough writes would bypass the undo log.
type file struct {
	lf   *fs.LoopbackFile
	fd   int
	f    *FS
	sync bool
}

func (fl *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	done, errno := fl.f.enter()
	if errno != 0 {
		return nil, errno
	}
	defer done()
	n, err := unix.Pread(fl.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

func (fl *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	done, errno := fl.f.enter()
	if errno != 0 {
		return 0, errno
	}
	defer done()
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	u, err := fl.f.track(fl.fd)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := u.save(off, off+int64(len(data))); err != nil {
		return 0, syscall.EIO
	}
	n, err := unix.Pwrite(fl.fd, data, off)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if fl.sync {
		u.commitRange(off, off+int64(n))
	}
	return uint32(n), 0
}

// Fsync commits the whole file (fsync and fdatasync alike).
func (fl *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	done, errno := fl.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	if err := unix.Fsync(fl.fd); err != nil {
		return fs.ToErrno(err)
	}
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	return fs.ToErrno(fl.f.commit(fl.fd))
}

func (fl *file) setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		fl.f.mu.Lock()
		errno := fl.f.truncateFd(fl.fd, int64(sz))
		fl.f.mu.Unlock()
		if errno != 0 {
			return errno
		}
	}
	return fl.lf.Setattr(ctx, in, out)
}

func (fl *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	done, errno := fl.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	return fl.setattr(ctx, in, out)
}

func (fl *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	done, errno := fl.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	u, err := fl.f.track(fl.fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := u.save(int64(off), int64(off+size)); err != nil {
		return syscall.EIO
	}
	return fs.ToErrno(unix.Fallocate(fl.fd, mode, int64(off), int64(size)))
}

func (fl *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return fl.lf.Getattr(ctx, out)
}

func (fl *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return fl.lf.Lseek(ctx, off, whence)
}

func (fl *file) Flush(ctx context.Context) syscall.Errno { return fl.lf.Flush(ctx) }

func (fl *file) Release(ctx context.Context) syscall.Errno { return fl.lf.Release(ctx) }

func (fl *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return fl.lf.Getlk(ctx, owner, lk, flags, out)
}

func (fl *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return fl.lf.Setlk(ctx, owner, lk, flags)
}

func (fl *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return fl.lf.Setlkw(ctx, owner, lk, flags)
}

// dir is a directory handle: listing (without the stash) and fsyncdir.
type dir struct {
	ds        fs.DirStream
	n         *node
	hideStash bool
}

func (d *dir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	r := d.ds.(fs.FileReaddirenter)
	for {
		e, errno := r.Readdirent(ctx)
		if errno != 0 || e == nil {
			return e, errno
		}
		if d.hideStash && e.Name == StashName {
			continue
		}
		return e, 0
	}
}

func (d *dir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.ds.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dir) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.ds.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
		return
	}
	d.ds.Close()
}

// Fsyncdir makes the directory's entries durable.
func (d *dir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	done, errno := d.n.f.enter()
	if errno != 0 {
		return errno
	}
	defer done()
	fd, err := unix.Open(d.n.path(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fs.ToErrno(err)
	}
	d.n.f.mu.Lock()
	defer d.n.f.mu.Unlock()
	return fs.ToErrno(d.n.f.commitDir(fd))
}
