package diskfault

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
)

// inodeKey names a backing inode independently of its paths, so renames and
// hard links do not confuse the undo log.
type inodeKey struct{ dev, ino uint64 }

func keyOf(st *unix.Stat_t) inodeKey { return inodeKey{uint64(st.Dev), st.Ino} }

// extent is a run of durable bytes that the visible file no longer holds.
type extent struct {
	off  int64
	data []byte
}

// fileUndo turns a dirty file back into its durable content: truncate (or
// extend with zeros) to size, then write every saved extent back. Invariant:
// outside the extents, bytes [0,size) of the visible file are durable.
type fileUndo struct {
	fd   int // our own read-write descriptor: survives the app's close and unlink
	size int64
	pre  []extent // sorted, disjoint, all within [0,size)
}

func (u *fileUndo) end(e extent) int64 { return e.off + int64(len(e.data)) }

// save keeps the durable bytes of [a,b) before they are overwritten.
func (u *fileUndo) save(a, b int64) error {
	if b > u.size {
		b = u.size
	}
	for _, g := range u.gaps(a, b) {
		buf := make([]byte, g[1]-g[0])
		n, err := unix.Pread(u.fd, buf, g[0])
		if err != nil {
			return fmt.Errorf("read durable bytes [%d,%d): %w", g[0], g[1], err)
		}
		// A short read means the visible file is already shorter than the
		// durable size; the missing tail is covered by an earlier truncate
		// extent, or reads as zeros after a ftruncate back to size.
		u.insert(extent{g[0], buf[:n]})
		if int64(n) < g[1]-g[0] {
			u.insert(extent{g[0] + int64(n), make([]byte, g[1]-g[0]-int64(n))})
		}
	}
	return nil
}

// gaps lists the parts of [a,b) no extent covers.
func (u *fileUndo) gaps(a, b int64) [][2]int64 {
	var out [][2]int64
	for _, e := range u.pre {
		if a >= b {
			break
		}
		if u.end(e) <= a {
			continue
		}
		if e.off >= b {
			break
		}
		if e.off > a {
			out = append(out, [2]int64{a, e.off})
		}
		a = u.end(e)
	}
	if a < b {
		out = append(out, [2]int64{a, b})
	}
	return out
}

func (u *fileUndo) insert(e extent) {
	if len(e.data) == 0 {
		return
	}
	i := sort.Search(len(u.pre), func(i int) bool { return u.pre[i].off >= e.off })
	u.pre = append(u.pre, extent{})
	copy(u.pre[i+1:], u.pre[i:])
	u.pre[i] = e
}

// cut removes [a,b) from the extents: those bytes are durable as visible.
func (u *fileUndo) cut(a, b int64) {
	var out []extent
	for _, e := range u.pre {
		s, t := e.off, u.end(e)
		if t <= a || s >= b {
			out = append(out, e)
			continue
		}
		if s < a {
			out = append(out, extent{s, e.data[:a-s]})
		}
		if t > b {
			out = append(out, extent{b, e.data[b-s:]})
		}
	}
	u.pre = out
}

// commitRange makes the visible bytes [a,b) durable (an O_SYNC write).
func (u *fileUndo) commitRange(a, b int64) {
	if a > u.size {
		// The hole between the durable end and this write is durable as
		// zeros, whatever unsynced data the file shows there now.
		u.insert(extent{u.size, make([]byte, a-u.size)})
	}
	if b > u.size {
		u.size = b
	}
	u.cut(a, b)
}

// dirty reports whether the visible file may differ from the durable one.
func (u *fileUndo) bytes() int64 {
	var n int64
	for _, e := range u.pre {
		n += int64(len(e.data))
	}
	return n
}

// restore writes the durable content back over the visible file.
func (u *fileUndo) restore() error {
	if err := unix.Ftruncate(u.fd, u.size); err != nil {
		return fmt.Errorf("truncate to durable size %d: %w", u.size, err)
	}
	for _, e := range u.pre {
		if _, err := unix.Pwrite(u.fd, e.data, e.off); err != nil {
			return fmt.Errorf("write back durable bytes at %d: %w", e.off, err)
		}
	}
	return nil
}

// dirUndo is a directory's durable entry list, taken before its first
// unsynced namespace change (dir-fsync mode only).
type dirUndo struct {
	fd      int // O_DIRECTORY descriptor: follows the directory through renames
	path    string
	entries map[string]dirent
}

type dirent struct {
	ino uint64
	dir bool
}

// listDir reads a directory's entries through a descriptor.
func listDir(fd int) (map[string]dirent, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	out := map[string]dirent{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(dfd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		b := buf[:n]
		for len(b) > 0 {
			// struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
			reclen := int(b[16]) | int(b[17])<<8
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
				uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			typ := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				out[s] = dirent{ino: ino, dir: typ == unix.DT_DIR}
			}
			b = b[reclen:]
		}
	}
}
