package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/admin"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
	"github.com/unibus/clusterkit/membershipd/store/sqlite"
)

// userStore is an open users store plus what to print after a KV write.
type userStore struct {
	store.Users
	js jetstream.JetStream // nil for SQLite
	nc *nats.Conn
}

func (s *userStore) close() {
	_ = s.Close()
	if s.nc != nil {
		s.nc.Close()
	}
}

// userFlags are the store-selection flags of every user command.
type userFlags struct {
	store string
	db    string
	conn  *admin.Conn
}

func addUserFlags(fs *flag.FlagSet) *userFlags {
	f := &userFlags{conn: connFlags(fs)}
	fs.StringVar(&f.store, "store", "kv", "kv (the live cluster, over NATS) or sqlite (with --db)")
	fs.StringVar(&f.db, "db", "", "SQLite file (standalone node); implies --store sqlite")
	return f
}

func (f *userFlags) open() (*userStore, error) {
	if f.db != "" || f.store == "sqlite" {
		if f.db == "" {
			return nil, usageErr("--store sqlite needs --db FILE")
		}
		st, err := sqlite.Open(f.db)
		if err != nil {
			return nil, err
		}
		return &userStore{Users: st}, nil
	}
	if f.store != "kv" {
		return nil, usageErr(fmt.Sprintf("--store %q: want kv or sqlite", f.store))
	}
	// Bad local input is exit 2 before anything is sent.
	if _, err := identity.LoadFile(f.conn.IdentityFile); err != nil {
		return nil, usageErr(err.Error())
	}
	if _, err := pki.CertPoolFromFile(f.conn.CA); err != nil {
		return nil, usageErr(err.Error())
	}
	nc, err := f.conn.Dial()
	var unknownCA x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &verify) {
		return nil, usageErr(fmt.Sprintf("--ca %s does not verify the node's certificate (%v)", f.conn.CA, err))
	}
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &userStore{Users: kv.NewUsers(js), js: js, nc: nc}, nil
}

// explain turns a failed KV write into "no quorum" when the node says so:
// a minority answers writes inconsistently, and the operator needs the
// cause, not NATS's symptom.
func (f *userFlags) explain(err error) error {
	if f.db != "" || errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrAlreadyRegistered) || errors.Is(err, store.ErrNotFound) {
		return err
	}
	if q := f.conn.QuorumProblem(); q != nil {
		return fmt.Errorf("%w; the write was not committed (%v)", q, err)
	}
	return err
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
func usageErr(msg string) error    { return usageError{msg} }

// userFail maps an error to its exit status: bad input 2, anything else 1.
func userFail(stderr io.Writer, cmd string, err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, store.ErrInvalid):
		fmt.Fprintf(stderr, "membershipd %s: %v\n", cmd, err)
		return exitBadArgs
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoStreamResponse):
		fmt.Fprintf(stderr, "membershipd %s: no quorum: the cluster did not answer in time (%v); a write may or may not have committed: check with `user list`\n", cmd, err)
		return exitFailed
	default:
		fmt.Fprintf(stderr, "membershipd %s: %v\n", cmd, err)
		return exitFailed
	}
}

func cmdUser(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "membershipd user: want add, list or revoke")
		return exitBadArgs
	}
	switch args[0] {
	case "add":
		return cmdUserAdd(args[1:], stdout, stderr)
	case "list":
		return cmdUserList(args[1:], stdout, stderr)
	case "revoke":
		return cmdUserRevoke(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "membershipd user: unknown subcommand %q (want add, list or revoke)\n", args[0])
		return exitBadArgs
	}
}

func cmdUserAdd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("user add", stderr)
	uf := addUserFlags(fs)
	handle := fs.String("handle", "", "the user's handle")
	role := fs.String("role", "member", "admin or member")
	signPub := fs.String("sign-pub", "", "the user's ed25519 public key, 64 hex characters")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	// Validate before connecting: bad input writes nothing anywhere.
	r, err := identity.ParseRole(*role)
	if err != nil {
		return userFail(stderr, "user add", usageErr(err.Error()))
	}
	if err := identity.ValidateHandle(*handle); err != nil {
		return userFail(stderr, "user add", usageErr("--handle: "+err.Error()))
	}
	if _, err := identity.ParseSignPub(*signPub); err != nil {
		return userFail(stderr, "user add", usageErr("--sign-pub: "+err.Error()))
	}
	st, err := uf.open()
	if err != nil {
		return userFail(stderr, "user add", err)
	}
	defer st.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := st.AddUser(ctx, store.User{SignPub: strings.ToLower(*signPub), Handle: *handle, Role: r})
	if errors.Is(err, store.ErrAlreadyRegistered) {
		cur, gerr := st.GetUser(ctx, strings.ToLower(*signPub))
		if gerr == nil {
			fmt.Fprintf(stderr, "membershipd user add: %s is already registered as %q role=%s status=%s; nothing changed (to replace it: user revoke, then user add)\n",
				cur.SignPub, cur.Handle, cur.Role, cur.Status)
			return exitFailed
		}
	}
	if err != nil {
		return userFail(stderr, "user add", uf.explain(err))
	}
	fmt.Fprintf(stdout, "added user %q (%s) role=%s\n", u.Handle, u.SignPub, u.Role)
	printReplication(ctx, st, stdout)
	return exitOK
}

// printReplication shows where the write lives: the runbook's cheap HA check.
func printReplication(ctx context.Context, st *userStore, stdout io.Writer) {
	if st.js == nil {
		fmt.Fprintln(stdout, "store: sqlite (standalone, not replicated)")
		return
	}
	// A follower reports "current" once it applied the write, a few ms
	// after the ack; wait briefly so the figure shows replication, not lag.
	var (
		s   kv.State
		err error
	)
	deadline := time.Now().Add(2 * time.Second)
	for {
		s, err = kv.Inspect(ctx, st.js, kv.Buckets[0].Name)
		if err != nil || s.FollowersCurrent == s.Followers || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		fmt.Fprintf(stdout, "%s: replication state unavailable: %v\n", kv.StreamName(kv.Buckets[0].Name), err)
		return
	}
	fmt.Fprintln(stdout, s.String())
}

func cmdUserList(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("user list", stderr)
	uf := addUserFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "also list revoked users whose handle starts with spec- (the specs' leftovers; hidden by default)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	st, err := uf.open()
	if err != nil {
		return userFail(stderr, "user list", err)
	}
	defer st.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	users, err := st.ListUsers(ctx)
	if err != nil {
		return userFail(stderr, "user list", err)
	}
	users, hidden := visibleUsers(users, *all)
	if hidden > 0 {
		fmt.Fprintf(stderr, "%d revoked spec-* users hidden (--all shows them)\n", hidden)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if users == nil {
			users = []store.User{}
		}
		_ = enc.Encode(users)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HANDLE\tROLE\tSTATUS\tSIGN_PUB\tADDED")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Handle, u.Role, u.Status, u.SignPub, u.AddedAt.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
	return exitOK
}

func cmdUserRevoke(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("user revoke", stderr)
	uf := addUserFlags(fs)
	// The key is positional (`user revoke --store kv HEX`); flags may follow it.
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		return userFail(stderr, "user revoke", usageErr(fmt.Sprintf("unexpected argument %q", pos[1])))
	}
	var key string
	if len(pos) == 1 {
		key = pos[0]
	}
	if key == "" {
		return userFail(stderr, "user revoke", usageErr("want the user's 64-hex sign key"))
	}
	if _, err := identity.ParseSignPub(key); err != nil {
		return userFail(stderr, "user revoke", usageErr(err.Error()))
	}
	st, err := uf.open()
	if err != nil {
		return userFail(stderr, "user revoke", err)
	}
	defer st.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := st.RevokeUser(ctx, strings.ToLower(key))
	if err != nil {
		return userFail(stderr, "user revoke", uf.explain(err))
	}
	fmt.Fprintf(stdout, "revoked user %q (%s) role=%s; the row stays, listed as revoked\n", u.Handle, u.SignPub, u.Role)
	printReplication(ctx, st, stdout)
	return exitOK
}

// specPrefix marks the users the runbook's specs create (chaos: spec-*).
const specPrefix = "spec-"

// visibleUsers drops revoked spec-* users unless all: every spec run on a
// live cluster leaves its revoked users behind (rows are never deleted), and
// they would bury the operator's own. It returns how many it hid.
func visibleUsers(users []store.User, all bool) ([]store.User, int) {
	if all {
		return users, 0
	}
	out := make([]store.User, 0, len(users))
	for _, u := range users {
		if u.Status == store.StatusRevoked && strings.HasPrefix(u.Handle, specPrefix) {
			continue
		}
		out = append(out, u)
	}
	return out, len(users) - len(out)
}
