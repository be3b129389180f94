package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Users {
		s, err := Open(filepath.Join(t.TempDir(), "unibus.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFileModeAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "unibus.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := identity.Generate()
	ctx := context.Background()
	u, err := s.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: "alice", Role: identity.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetUser(ctx, id.SignPub())
	if err != nil || got.Handle != u.Handle || !got.AddedAt.Equal(u.AddedAt) {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
}
