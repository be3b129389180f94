// Command membershipd is the unibus membership daemon: one node of the
// NATS JetStream cluster that carries the unibus control and data planes.
//
// main.go only dispatches; each subcommand lives in its own cmd_*.go file.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes: 0 success, 1 the operation failed, 2 bad input.
const (
	exitOK      = 0
	exitFailed  = 1
	exitBadArgs = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		return cmdServe(args, stdout, stderr)
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "version":
		return cmdVersion(args[1:], stdout, stderr)
	case "cluster":
		if len(args) > 1 && args[1] == "report" {
			return cmdClusterReport(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "replicas" {
			return cmdClusterReplicas(args[2:], stdout, stderr)
		}
		if len(args) > 1 && args[1] == "stepdown" {
			return cmdClusterStepDown(args[2:], stdout, stderr)
		}
		fmt.Fprintln(stderr, "membershipd cluster: want `cluster report`, `cluster replicas --stream NAME` or `cluster stepdown --stream NAME`")
		return exitBadArgs
	case "kv":
		if len(args) > 1 && args[1] == "scale" {
			return cmdKVScale(args[2:], stdout, stderr)
		}
		fmt.Fprintln(stderr, "membershipd kv: want `kv scale --replicas N`")
		return exitBadArgs
	case "user":
		return cmdUser(args[1:], stdout, stderr)
	case "key":
		if len(args) > 1 && args[1] == "new" {
			return cmdKeyNew(args[2:], stdout, stderr)
		}
		fmt.Fprintln(stderr, "membershipd key: want `key new --out FILE`")
		return exitBadArgs
	case "migrate-to-kv":
		return cmdMigrateToKV(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "membershipd: unknown command %q (run `membershipd help`)\n", args[0])
		return exitBadArgs
	}
}

const usage = `membershipd — unibus membership daemon (one node of a NATS JetStream cluster)

Usage:
  membershipd [serve] [flags]            run a node (default command)
  membershipd version [--features]       print the version (and the cold-start fixes compiled in)
  membershipd cluster report [flags]     servers, routes, meta leader, bucket replication
  membershipd cluster replicas --stream NAME [--json]
                                         every server's own copy of a stream (per-replica state)
  membershipd cluster stepdown --stream NAME
                                         hand a stream's leadership to another replica
  membershipd kv scale --replicas N      raise or lower every control-plane bucket in place
  membershipd user add --store kv --handle H --role admin|member --sign-pub HEX
  membershipd user list --store kv [--all] (or --db FILE; --all also shows revoked spec-* users)
  membershipd user revoke --store kv HEX
  membershipd key new --out FILE         new user identity (0600 file); prints its 64-hex --sign-pub
  membershipd migrate-to-kv --db FILE    copy a SQLite store into the live cluster's KV

Run a command with -h for its flags; flags may come before or after other words. Exit status: 0 ok, 1 failed, 2 bad input.
`
