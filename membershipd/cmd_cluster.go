package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/unibus/clusterkit/membershipd/admin"
)

// connFlags are the flags of every command that talks to a live node. The
// defaults assume a call on a node, over loopback.
func connFlags(fs *flag.FlagSet) *admin.Conn {
	c := &admin.Conn{}
	fs.StringVar(&c.URL, "nats-url", "tls://127.0.0.1:4250", "a node's data-plane URL (TLS is always used)")
	fs.StringVar(&c.CA, "ca", "/opt/unibus/tls/ca.crt", "client CA that signed the node's server certificate")
	fs.StringVar(&c.Cert, "cert", "/opt/unibus/tls/server.crt", "client certificate (the node's data-plane certificate works on a node)")
	fs.StringVar(&c.Key, "key", "/opt/unibus/tls/server.key", "client key")
	fs.StringVar(&c.IdentityFile, "internal-id-file", "/opt/unibus/secrets/internal.id", "identity to connect with (the node's internal service identity)")
	fs.IntVar(&c.HTTPPort, "http-port", 8470, "the node's HTTPS port (asked why a connection was refused)")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "connect timeout")
	return c
}

func cmdClusterReport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cluster report", stderr)
	c := connFlags(fs)
	nodes := fs.Int("nodes", 3, "number of nodes expected to answer")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	for _, f := range []string{c.CA, c.Cert, c.Key} {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(stderr, "membershipd cluster report: %v\n", err)
			return exitBadArgs
		}
	}
	nc, err := c.Dial()
	if err != nil {
		fmt.Fprintf(stderr, "membershipd cluster report: %v\n", err)
		return exitFailed
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := admin.ClusterReport(ctx, nc, *nodes)
	if err != nil {
		fmt.Fprintf(stderr, "membershipd cluster report: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		_ = r.WriteText(stdout)
	}
	if len(r.Problems) > 0 {
		return exitFailed
	}
	return exitOK
}

// cmdClusterReplicas prints every server's own copy of a stream (JSZ of
// each server): what the fault claims compare after a crash.
func cmdClusterReplicas(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cluster replicas", stderr)
	c := connFlags(fs)
	stream := fs.String("stream", "", "stream name (e.g. ROOM_<id> or KV_UNIBUS_users)")
	nodes := fs.Int("nodes", 3, "number of nodes expected to answer")
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *stream == "" {
		fmt.Fprintln(stderr, "membershipd cluster replicas: --stream is required")
		return exitBadArgs
	}
	nc, err := c.Dial()
	if err != nil {
		fmt.Fprintf(stderr, "membershipd cluster replicas: %v\n", err)
		return exitFailed
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	reps, err := admin.Replicas(ctx, nc, *stream, *nodes)
	if err != nil {
		fmt.Fprintf(stderr, "membershipd cluster replicas: %v\n", err)
		return exitFailed
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reps)
		return exitOK
	}
	for _, r := range reps {
		fmt.Fprintf(stdout, "%s %s: %s\n", *stream, r.Node, r.Same())
	}
	return exitOK
}

// cmdClusterStepDown asks a stream's leader to step down: the remedy for a
// follower stuck catching up (its copy's last sequence in `cluster
// replicas` stays behind the others').
func cmdClusterStepDown(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cluster stepdown", stderr)
	c := connFlags(fs)
	stream := fs.String("stream", "", "stream name (e.g. KV_UNIBUS_users or KV_UNIBUS_heartbeats)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *stream == "" {
		fmt.Fprintln(stderr, "membershipd cluster stepdown: --stream is required")
		return exitBadArgs
	}
	nc, err := c.Dial()
	if err != nil {
		fmt.Fprintf(stderr, "membershipd cluster stepdown: %v\n", err)
		return exitFailed
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.StepDown(ctx, nc, *stream); err != nil {
		fmt.Fprintf(stderr, "membershipd cluster stepdown: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "%s: the leader stepped down; the replicas elect a new one\n", *stream)
	return exitOK
}

func cmdKVScale(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("kv scale", stderr)
	c := connFlags(fs)
	replicas := fs.Int("replicas", 0, "target replica count (1..cluster size)")
	nodes := fs.Int("nodes", 3, "number of nodes in the cluster")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for every replica to be current")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *replicas < 1 || *replicas > *nodes {
		fmt.Fprintf(stderr, "membershipd kv scale: --replicas %d: must be between 1 and --nodes %d\n", *replicas, *nodes)
		return exitBadArgs
	}
	nc, err := c.Dial()
	if err != nil {
		fmt.Fprintf(stderr, "membershipd kv scale: %v\n", err)
		return exitFailed
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := admin.Scale(ctx, nc, *replicas, log); err != nil {
		fmt.Fprintf(stderr, "membershipd kv scale: %v\n", err)
		return exitFailed
	}
	r, err := admin.ClusterReport(ctx, nc, *nodes)
	if err != nil {
		fmt.Fprintf(stderr, "membershipd kv scale: scaled, but the report failed: %v\n", err)
		return exitFailed
	}
	_ = r.WriteText(stdout)
	return exitOK
}
