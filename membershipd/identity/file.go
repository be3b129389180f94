package identity

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

const (
	fileMode os.FileMode = 0o600
	dirMode  os.FileMode = 0o700
	// maxFileSize bounds the read: a seed line is 58 bytes.
	maxFileSize = 4096
)

// LoadFile reads an identity file: the nkey user seed text ("SU..."), the
// format the nats CLI takes with --nkey. A file that grants group or other
// any access is refused, since the seed may already have leaked.
func LoadFile(path string) (*Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, pathErr(err))
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the file read.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, pathErr(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("identity file %s is readable by others (mode %#o); chmod 600 it", path, uint32(perm))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, pathErr(err))
	}
	defer clear(data)
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("identity file %s: %w", path, errNotUserSeed)
	}
	id, err := fromSeedText(bytes.TrimSpace(data))
	if err != nil {
		// err never carries the file content.
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return id, nil
}

// WriteFile writes id's seed to path, creating the parent directory (0700)
// if missing. It never overwrites: the old file may be the only copy of a
// registered key. The seed goes to a 0600 temp file in the same directory,
// is fsynced, then hard-linked to path; link, unlike rename, fails if path
// appeared meanwhile, so two concurrent writers cannot clobber each other.
func WriteFile(path string, id *Identity) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("identity file %s: create directory: %w", path, pathErr(err))
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("identity file %s: %w; refusing to overwrite", path, fs.ErrExist)
	}
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("identity file %s: %w", path, err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(suffix[:]))
	// Created 0600 before any secret byte is written.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("identity file %s: create temp file: %w", path, pathErr(err))
	}
	// The temp name goes away on every path; on success path holds the link.
	defer os.Remove(tmp)
	seed := append(id.Seed(), '\n')
	defer clear(seed)
	_, err = f.Write(seed)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("identity file %s: write temp file: %w", path, pathErr(err))
	}
	if err := publish(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("identity file %s: %w; refusing to overwrite", path, fs.ErrExist)
		}
		return fmt.Errorf("identity file %s: %w", path, pathErr(err))
	}
	syncDir(dir)
	return nil
}

// LoadOrCreate loads path, or generates and writes a new identity if the file
// does not exist. created reports the latter. If another process creates the
// file at the same moment, its identity is loaded instead.
func LoadOrCreate(path string) (id *Identity, created bool, err error) {
	id, err = LoadFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, false, err
	}
	id, err = Generate()
	if err != nil {
		return nil, false, err
	}
	err = WriteFile(path, id)
	if errors.Is(err, fs.ErrExist) {
		id, err = LoadFile(path)
		return id, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return id, true, nil
}

// publish gives tmp the name path without replacing an existing file. A
// filesystem without hard links falls back to check-then-rename, which only
// loses the no-clobber guarantee against a concurrent writer.
func publish(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, serr := os.Lstat(path); serr == nil {
		return fs.ErrExist
	}
	return os.Rename(tmp, path)
}

// syncDir makes the new directory entry durable. Best effort: some
// platforms cannot fsync a directory, and the file itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// pathErr drops the path from an *fs.PathError, since the caller's message
// already names the file.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
