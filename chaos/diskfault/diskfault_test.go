package diskfault

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
)

// mountT mounts a fresh backing dir (seeded with the given durable files)
// and unmounts it at the end of the test.
func mountT(t *testing.T, mode MetadataMode, seed map[string]string) (*FS, string, string) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range seed {
		p := filepath.Join(backing, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt, Options{MetadataDurable: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Unmount() })
	return f, backing, mnt
}

// cut powers off, unmounts, and returns the backing dir's files.
func cut(t *testing.T, f *FS) (Stats, map[string]string) {
	t.Helper()
	s, err := f.PowerCut()
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	return s, tree(t, f.Backing())
}

func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if info.IsDir() {
			if rel != "." {
				out[rel+"/"] = ""
			}
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func write(t *testing.T, path, data string, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, path string) {
	t.Helper()
	d, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func want(t *testing.T, got map[string]string, w map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(w) {
		t.Fatalf("backing after cut:\n got  %q\n want %q", got, w)
	}
}

var modes = []MetadataMode{MetadataImmediate, MetadataDirFsync}

func TestUnsyncedWriteIsLost(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, nil)
			write(t, filepath.Join(mnt, "a"), "hello", false)
			// Visible at once, to another reader, before any sync.
			if b, _ := os.ReadFile(filepath.Join(mnt, "a")); string(b) != "hello" {
				t.Fatalf("read back %q", b)
			}
			s, got := cut(t, f)
			if m == MetadataImmediate {
				want(t, got, map[string]string{"a": ""}) // the create was durable, the data not
			} else {
				want(t, got, map[string]string{})
			}
			if s.Files != 1 {
				t.Errorf("stats %+v: want 1 file dropped", s)
			}
		})
	}
}

func TestFsyncedWriteSurvives(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, nil)
			write(t, filepath.Join(mnt, "a"), "hello", true)
			syncDir(t, mnt)
			_, got := cut(t, f)
			want(t, got, map[string]string{"a": "hello"})
		})
	}
}

func TestFileFsyncWithoutDirFsync(t *testing.T) {
	f, _, mnt := mountT(t, MetadataDirFsync, nil)
	write(t, filepath.Join(mnt, "a"), "hello", true)
	s, got := cut(t, f)
	want(t, got, map[string]string{}) // data durable, but no name points at it
	if s.EntriesDropped != 1 {
		t.Errorf("stats %+v: want 1 entry dropped", s)
	}
}

func TestPartialSync(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, map[string]string{"log": "0123456789"})
			fh, err := os.OpenFile(filepath.Join(mnt, "log"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fh.WriteAt([]byte("AB"), 2); err != nil { // overwrite inside
				t.Fatal(err)
			}
			if _, err := fh.WriteAt([]byte("first"), 10); err != nil { // append
				t.Fatal(err)
			}
			if err := fh.Sync(); err != nil {
				t.Fatal(err)
			}
			if _, err := fh.WriteAt([]byte("XY"), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := fh.WriteAt([]byte("second"), 15); err != nil {
				t.Fatal(err)
			}
			if _, err := fh.WriteAt([]byte("far"), 100); err != nil { // sparse
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(mnt, "log")); !bytes.HasPrefix(b, []byte("XYAB456789firstsecond")) {
				t.Fatalf("visible before cut: %q", b)
			}
			if err := fh.Close(); err != nil { // close is not durability either
				t.Fatal(err)
			}
			_, got := cut(t, f)
			want(t, got, map[string]string{"log": "01AB456789first"})
		})
	}
}

func TestCloseIsNotDurability(t *testing.T) {
	f, _, mnt := mountT(t, MetadataImmediate, map[string]string{"a": "durable"})
	for i := 0; i < 3; i++ {
		write(t, filepath.Join(mnt, "a"), fmt.Sprintf("attempt %d", i), false)
	}
	_, got := cut(t, f)
	want(t, got, map[string]string{"a": "durable"})
}

func TestTruncate(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, map[string]string{"a": "0123456789", "b": "0123456789", "c": "0123456789"})
			if err := os.Truncate(filepath.Join(mnt, "a"), 3); err != nil { // by path, never synced
				t.Fatal(err)
			}
			fb, err := os.OpenFile(filepath.Join(mnt, "b"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := fb.Truncate(4); err != nil { // by descriptor, synced
				t.Fatal(err)
			}
			if err := fb.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := fb.Truncate(20); err != nil { // then extended, not synced
				t.Fatal(err)
			}
			fb.Close()
			write(t, filepath.Join(mnt, "c"), "new", false) // O_TRUNC + write, never synced
			_, got := cut(t, f)
			want(t, got, map[string]string{"a": "0123456789", "b": "0123", "c": "0123456789"})
		})
	}
}

// The classic atomic-replace idiom: write a temp file, fsync it, rename it
// over the old one. Durable in immediate mode; in dir-fsync mode only once
// the directory is synced.
func TestRenameReplace(t *testing.T) {
	cases := []struct {
		mode    MetadataMode
		dirSync bool
		want    map[string]string
	}{
		{MetadataImmediate, false, map[string]string{"cfg": "new"}},
		{MetadataDirFsync, false, map[string]string{"cfg": "old"}},
		{MetadataDirFsync, true, map[string]string{"cfg": "new"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/dirsync=%v", c.mode, c.dirSync), func(t *testing.T) {
			f, _, mnt := mountT(t, c.mode, map[string]string{"cfg": "old"})
			write(t, filepath.Join(mnt, "cfg.tmp"), "new", true)
			if err := os.Rename(filepath.Join(mnt, "cfg.tmp"), filepath.Join(mnt, "cfg")); err != nil {
				t.Fatal(err)
			}
			if c.dirSync {
				syncDir(t, mnt)
			}
			_, got := cut(t, f)
			want(t, got, c.want)
		})
	}
}

func TestUnlinkAndCrossDirRename(t *testing.T) {
	seed := map[string]string{"gone": "g", "d1/moved": "m", "d1/x": "x"}
	cases := []struct {
		mode   MetadataMode
		syncD2 bool
		want   map[string]string
	}{
		{MetadataImmediate, false, map[string]string{"d1/": "", "d1/x": "x", "d2/": "", "d2/moved": "m"}},
		{MetadataDirFsync, false, map[string]string{"gone": "g", "d1/": "", "d1/moved": "m", "d1/x": "x"}},
		// d2 is new: syncing it makes its entry durable, but d2 itself is not
		// in the synced root, so the file comes back at its old name only.
		{MetadataDirFsync, true, map[string]string{"gone": "g", "d1/": "", "d1/moved": "m", "d1/x": "x"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/syncd2=%v", c.mode, c.syncD2), func(t *testing.T) {
			f, _, mnt := mountT(t, c.mode, seed)
			if err := os.Remove(filepath.Join(mnt, "gone")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(mnt, "d2"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(mnt, "d1/moved"), filepath.Join(mnt, "d2/moved")); err != nil {
				t.Fatal(err)
			}
			if c.syncD2 {
				syncDir(t, filepath.Join(mnt, "d2"))
			}
			_, got := cut(t, f)
			want(t, got, c.want)
		})
	}
}

// A rename whose target directory is synced but whose source is not leaves
// the file under both names (a valid crash outcome on a strict filesystem).
func TestRenameHalfSynced(t *testing.T) {
	f, _, mnt := mountT(t, MetadataDirFsync, map[string]string{"d1/a": "a", "d2/keep": "k"})
	if err := os.Rename(filepath.Join(mnt, "d1/a"), filepath.Join(mnt, "d2/b")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, filepath.Join(mnt, "d2"))
	_, got := cut(t, f)
	want(t, got, map[string]string{"d1/": "", "d1/a": "a", "d2/": "", "d2/b": "a", "d2/keep": "k"})
}

func TestNestedNewDirs(t *testing.T) {
	f, _, mnt := mountT(t, MetadataDirFsync, nil)
	p := filepath.Join(mnt, "s", "t")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(p, "f"), "data", true)
	syncDir(t, p)
	syncDir(t, filepath.Join(mnt, "s"))
	// The root was never synced: s, and everything under it, is gone.
	if ents, _ := os.ReadDir(mnt); len(ents) != 1 || ents[0].Name() != "s" {
		t.Fatalf("listing hides the stash? %v", ents)
	}
	_, got := cut(t, f)
	want(t, got, map[string]string{})
}

func TestOSync(t *testing.T) {
	f, _, mnt := mountT(t, MetadataImmediate, map[string]string{"a": "0123"})
	fh, err := os.OpenFile(filepath.Join(mnt, "a"), os.O_RDWR|syscall.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.OpenFile(filepath.Join(mnt, "a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.WriteAt([]byte("unsynced"), 4); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("S"), 14); err != nil { // past the unsynced bytes
		t.Fatal(err)
	}
	fh.Close()
	plain.Close()
	_, got := cut(t, f)
	// The kernel follows an O_DSYNC write on FUSE with an FSYNC request that
	// carries no range, so the whole file is committed, the earlier plain
	// write too (ext4 would flush only the written range).
	want(t, got, map[string]string{"a": "0123unsynced\x00\x00S"})
}

func TestManyFiles(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, nil)
			wantFiles := map[string]string{}
			for i := 0; i < 200; i++ {
				name := fmt.Sprintf("f%03d", i)
				write(t, filepath.Join(mnt, name), name, i%2 == 0)
				wantFiles[name] = ""
				if i%2 == 0 {
					wantFiles[name] = name
				}
			}
			syncDir(t, mnt) // every name is durable; only the even files' data
			s, got := cut(t, f)
			want(t, got, wantFiles)
			if s.Files != 100 {
				t.Errorf("stats %+v: want 100 files dropped", s)
			}
		})
	}
}

func TestDeadAfterCut(t *testing.T) {
	f, _, mnt := mountT(t, MetadataImmediate, nil)
	fh, err := os.Create(filepath.Join(mnt, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := f.PowerCut(); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString("after"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after cut: %v, want EIO", err)
	}
	if err := fh.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync after cut: %v, want EIO", err)
	}
	if _, err := os.Create(filepath.Join(mnt, "b")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("create after cut: %v, want EIO", err)
	}
}

func TestCutIsAtomicAcrossMounts(t *testing.T) {
	var fss []*FS
	for i := 0; i < 3; i++ {
		f, _, mnt := mountT(t, MetadataImmediate, nil)
		write(t, filepath.Join(mnt, "synced"), "s", true)
		write(t, filepath.Join(mnt, "unsynced"), "u", false)
		fss = append(fss, f)
	}
	stats, err := PowerCut(fss...)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fss {
		if err := f.Unmount(); err != nil {
			t.Fatal(err)
		}
		got := tree(t, f.Backing())
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		want(t, got, map[string]string{"synced": "s", "unsynced": ""})
		if stats[i].Files != 1 {
			t.Errorf("mount %d: %+v", i, stats[i])
		}
	}
}

func TestBadMode(t *testing.T) {
	if _, err := Mount(t.TempDir(), t.TempDir(), Options{MetadataDurable: "journal"}); err == nil {
		t.Fatal("want an error for an unknown metadata mode")
	}
}

func TestCheckpoint(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			f, _, mnt := mountT(t, m, map[string]string{"gone": "g"})
			if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(mnt, "d", "old"), "checkpointed", false)
			if err := os.Remove(filepath.Join(mnt, "gone")); err != nil {
				t.Fatal(err)
			}
			if err := f.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(mnt, "d", "new"), "after", false)
			_, got := cut(t, f)
			w := map[string]string{"d/": "", "d/old": "checkpointed"}
			if m == MetadataImmediate {
				w["d/new"] = ""
			}
			want(t, got, w)
		})
	}
}
