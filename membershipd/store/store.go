// Package store defines the control-plane users store that the SQLite
// (single node) and JetStream KV (cluster) implementations share.
package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// Status is a user's registration state. Users are never deleted: revoking
// keeps the row for audit.
type Status string

const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// User is one registered bus user, keyed by its ed25519 sign key.
type User struct {
	SignPub   string        `json:"sign_pub"`
	Handle    string        `json:"handle"`
	Role      identity.Role `json:"role"`
	Status    Status        `json:"status"`
	AddedAt   time.Time     `json:"added_at"`
	RevokedAt *time.Time    `json:"revoked_at,omitempty"`
}

var (
	// ErrAlreadyRegistered: the key is registered and active. Returned
	// wrapped with the key: "user <key>: already registered".
	ErrAlreadyRegistered = errors.New("already registered")
	// ErrNotFound: no user has that key.
	ErrNotFound = errors.New("no such user")
	// ErrInvalid wraps every input validation error, so callers can map
	// them to a usage error (exit 2) rather than a failure.
	ErrInvalid = errors.New("invalid input")
)

// Users is the users store.
type Users interface {
	// AddUser registers u with status active, setting AddedAt if zero. If
	// the key is registered and active it returns ErrAlreadyRegistered and
	// changes nothing, so a re-add can never change a role. If the key is
	// revoked, the new user replaces it.
	AddUser(ctx context.Context, u User) (User, error)
	// GetUser returns the user, revoked or not, or ErrNotFound.
	GetUser(ctx context.Context, signPub string) (User, error)
	// ListUsers returns every user, revoked ones included, sorted by handle
	// then key.
	ListUsers(ctx context.Context) ([]User, error)
	// RevokeUser marks the user revoked and sets RevokedAt. Revoking a
	// revoked user returns it unchanged; an unknown key is ErrNotFound.
	RevokeUser(ctx context.Context, signPub string) (User, error)
	Close() error
}

// CanonicalKey validates a sign key and returns it as lower-case hex, the
// form every store keys on. Errors wrap ErrInvalid.
func CanonicalKey(signPub string) (string, error) {
	pub, err := identity.ParseSignPub(signPub)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return hex.EncodeToString(pub), nil
}

// NewUser validates u and returns the record AddUser stores: canonical key,
// status active, no revocation, AddedAt set (now if zero) in UTC with the
// monotonic reading stripped, so it survives encoding unchanged. Errors wrap
// ErrInvalid.
func NewUser(u User, now time.Time) (User, error) {
	key, err := CanonicalKey(u.SignPub)
	if err != nil {
		return User{}, err
	}
	if err := identity.ValidateHandle(u.Handle); err != nil {
		return User{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	role, err := identity.ParseRole(string(u.Role))
	if err != nil {
		return User{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	added := u.AddedAt
	if added.IsZero() {
		added = now
	}
	return User{
		SignPub: key,
		Handle:  u.Handle,
		Role:    role,
		Status:  StatusActive,
		AddedAt: added.UTC(),
	}, nil
}

// AlreadyRegistered is the error AddUser returns for an active key.
func AlreadyRegistered(signPub string) error {
	return fmt.Errorf("user %s: %w", signPub, ErrAlreadyRegistered)
}

// NotFound is the error for an unknown key.
func NotFound(signPub string) error {
	return fmt.Errorf("user %s: %w", signPub, ErrNotFound)
}

// SortUsers puts users in ListUsers order: by handle, then key.
func SortUsers(users []User) {
	slices.SortFunc(users, func(a, b User) int {
		if c := strings.Compare(a.Handle, b.Handle); c != 0 {
			return c
		}
		return strings.Compare(a.SignPub, b.SignPub)
	})
}
