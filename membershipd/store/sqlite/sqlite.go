// Package sqlite is the single-node users store, a SQLite file (pure-Go
// driver: the deploy cross-builds with CGO_ENABLED=0).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers driver "sqlite"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store"
)

const schema = `CREATE TABLE IF NOT EXISTS users (
	sign_pub   TEXT PRIMARY KEY,
	handle     TEXT NOT NULL,
	role       TEXT NOT NULL,
	status     TEXT NOT NULL,
	added_at   TEXT NOT NULL,
	revoked_at TEXT
)`

// Times are stored as UTC RFC 3339 text with nanoseconds: readable in the
// sqlite3 shell and exact on the round trip.
const timeFormat = time.RFC3339Nano

// Store is a users store in one SQLite file.
type Store struct {
	db   *sql.DB
	path string
}

var _ store.Users = (*Store)(nil)

// Open opens (creating if missing, mode 0600) the database at path and
// creates the schema if missing.
func Open(path string) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		// '?' would start the driver's DSN parameters.
		return nil, fmt.Errorf("open users db %q: unsupported path", path)
	}
	// Create the file ourselves so it starts 0600 whatever the umask;
	// SQLite gives its -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open users db %s: %w", path, unwrapPath(err))
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open users db %s: %w", path, unwrapPath(err))
	}
	// busy_timeout: the CLI and the daemon may write at once. WAL lets
	// readers run beside a writer. _txlock=immediate takes the write lock at
	// BEGIN, so a read-then-write transaction cannot fail to upgrade.
	dsn := path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open users db %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open users db %s: create schema: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close users db %s: %w", s.path, err)
	}
	return nil
}

// AddUser implements store.Users. One statement, so one transaction: insert,
// or replace the row only if it is revoked. No row changed means the key is
// active and nothing was written.
func (s *Store) AddUser(ctx context.Context, u store.User) (store.User, error) {
	nu, err := store.NewUser(u, time.Now())
	if err != nil {
		return store.User{}, fmt.Errorf("add user: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO users (sign_pub, handle, role, status, added_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, NULL)
		ON CONFLICT (sign_pub) DO UPDATE SET
			handle = excluded.handle, role = excluded.role, status = excluded.status,
			added_at = excluded.added_at, revoked_at = NULL
		WHERE users.status = ?`,
		nu.SignPub, nu.Handle, string(nu.Role), string(nu.Status), nu.AddedAt.Format(timeFormat), string(store.StatusRevoked))
	if err != nil {
		return store.User{}, fmt.Errorf("add user %s: %w", nu.SignPub, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return store.User{}, fmt.Errorf("add user %s: %w", nu.SignPub, err)
	}
	if n == 0 {
		return store.User{}, store.AlreadyRegistered(nu.SignPub)
	}
	return nu, nil
}

// GetUser implements store.Users.
func (s *Store) GetUser(ctx context.Context, signPub string) (store.User, error) {
	key, err := store.CanonicalKey(signPub)
	if err != nil {
		return store.User{}, fmt.Errorf("get user: %w", err)
	}
	u, err := scanUser(s.db.QueryRowContext(ctx, selectUser+` WHERE sign_pub = ?`, key))
	if err != nil {
		return store.User{}, getErr(key, err)
	}
	return u, nil
}

// ListUsers implements store.Users.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	rows, err := s.db.QueryContext(ctx, selectUser+` ORDER BY handle, sign_pub`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	// SQLite's BINARY collation already matches; sorting again keeps the
	// order defined in one place (store.SortUsers) for both stores.
	store.SortUsers(out)
	return out, nil
}

// RevokeUser implements store.Users. The update only touches an active row,
// so revoking twice keeps the first RevokedAt.
func (s *Store) RevokeUser(ctx context.Context, signPub string) (store.User, error) {
	key, err := store.CanonicalKey(signPub)
	if err != nil {
		return store.User{}, fmt.Errorf("revoke user: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return store.User{}, fmt.Errorf("revoke user %s: %w", key, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UTC().Format(timeFormat)
	if _, err := tx.ExecContext(ctx, `UPDATE users SET status = ?, revoked_at = ? WHERE sign_pub = ? AND status = ?`,
		string(store.StatusRevoked), now, key, string(store.StatusActive)); err != nil {
		return store.User{}, fmt.Errorf("revoke user %s: %w", key, err)
	}
	u, err := scanUser(tx.QueryRowContext(ctx, selectUser+` WHERE sign_pub = ?`, key))
	if err != nil {
		return store.User{}, getErr(key, err)
	}
	if err := tx.Commit(); err != nil {
		return store.User{}, fmt.Errorf("revoke user %s: %w", key, err)
	}
	return u, nil
}

const selectUser = `SELECT sign_pub, handle, role, status, added_at, revoked_at FROM users`

type scanner interface{ Scan(dest ...any) error }

func scanUser(r scanner) (store.User, error) {
	var (
		u            store.User
		role, status string
		added        string
		revoked      sql.NullString
	)
	if err := r.Scan(&u.SignPub, &u.Handle, &role, &status, &added, &revoked); err != nil {
		return store.User{}, err
	}
	u.Role, u.Status = identity.Role(role), store.Status(status)
	t, err := time.Parse(timeFormat, added)
	if err != nil {
		return store.User{}, fmt.Errorf("user %s: bad added_at %q: %w", u.SignPub, added, err)
	}
	u.AddedAt = t
	if revoked.Valid {
		t, err := time.Parse(timeFormat, revoked.String)
		if err != nil {
			return store.User{}, fmt.Errorf("user %s: bad revoked_at %q: %w", u.SignPub, revoked.String, err)
		}
		u.RevokedAt = &t
	}
	return u, nil
}

func getErr(key string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.NotFound(key)
	}
	return fmt.Errorf("get user %s: %w", key, err)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
