package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/unibus/clusterkit/membershipd/admin"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/sqlite"
)

// cmdMigrateToKV copies every user row of a SQLite store into the live
// cluster's KV. It never overwrites: a row that already exists in the KV
// with the same role and status is "unchanged", one that differs is
// reported and left alone. A second run therefore changes nothing.
func cmdMigrateToKV(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("migrate-to-kv", stderr)
	uf := addUserFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if uf.db == "" {
		fmt.Fprintln(stderr, "membershipd migrate-to-kv: --db FILE is required")
		return exitBadArgs
	}
	caSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "ca" {
			caSet = true
		}
	})
	// The allowlist must not travel to another host on a default CA path
	// the operator never looked at.
	if !admin.IsLoopbackURL(uf.conn.URL) && !caSet {
		fmt.Fprintf(stderr, "membershipd migrate-to-kv: refusing non-loopback --nats-url %s without an explicit --ca (run it on a node, over loopback)\n", uf.conn.URL)
		return exitBadArgs
	}
	src, err := sqlite.Open(uf.db)
	if err != nil {
		return userFail(stderr, "migrate-to-kv", err)
	}
	defer func() { _ = src.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, err := src.ListUsers(ctx)
	if err != nil {
		return userFail(stderr, "migrate-to-kv", err)
	}
	kvf := *uf
	kvf.db, kvf.store = "", "kv"
	dst, err := kvf.open()
	if err != nil {
		return userFail(stderr, "migrate-to-kv", err)
	}
	defer dst.close()
	copied, unchanged, conflicts := 0, 0, 0
	for _, u := range rows {
		cur, err := dst.GetUser(ctx, u.SignPub)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if _, err := dst.AddUser(ctx, u); err != nil {
				return userFail(stderr, "migrate-to-kv", fmt.Errorf("copy %s: %w", u.SignPub, err))
			}
			if u.Status == store.StatusRevoked {
				if _, err := dst.RevokeUser(ctx, u.SignPub); err != nil {
					return userFail(stderr, "migrate-to-kv", fmt.Errorf("revoke %s: %w", u.SignPub, err))
				}
			}
			copied++
			fmt.Fprintf(stdout, "copied %q (%s) role=%s status=%s\n", u.Handle, u.SignPub, u.Role, u.Status)
		case err != nil:
			return userFail(stderr, "migrate-to-kv", fmt.Errorf("read %s: %w", u.SignPub, err))
		case cur.Role == u.Role && cur.Status == u.Status && cur.Handle == u.Handle:
			unchanged++
		default:
			conflicts++
			fmt.Fprintf(stdout, "left alone %s: kv has %q role=%s status=%s, sqlite has %q role=%s status=%s\n",
				u.SignPub, cur.Handle, cur.Role, cur.Status, u.Handle, u.Role, u.Status)
		}
	}
	fmt.Fprintf(stdout, "migrate-to-kv: %d rows: %d copied, %d unchanged, %d left alone (differ)\n", len(rows), copied, unchanged, conflicts)
	printReplication(ctx, dst, stdout)
	return exitOK
}
