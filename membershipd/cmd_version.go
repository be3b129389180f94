package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/unibus/clusterkit/internal/cliflag"
	"github.com/unibus/clusterkit/membershipd/node"
)

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	features := fs.Bool("features", false, "also print the cold-start fixes compiled in")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	fmt.Fprintf(stdout, "membershipd %s\n", node.Version)
	if *features {
		fmt.Fprintf(stdout, "features: %s\n", strings.Join(node.Features(), " "))
	}
	return exitOK
}

// newFlagSet makes a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("membershipd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse returns (exit code, true) to continue, or (code, false) to stop.
// Flags may come before or after positional words; none is expected here.
// A bad flag is one clear line plus a hint, not a wall of usage.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	pos, code, ok := parseArgs(fs, args)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), pos[0])
		return exitBadArgs, false
	}
	return exitOK, true
}

// parseArgs parses flags in any position (`user revoke HEX --store kv`)
// and returns the positional words.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	pos, err := cliflag.Parse(fs, args, cliflag.Options{})
	if err == flag.ErrHelp {
		fs.PrintDefaults()
		return nil, exitOK, false
	}
	if err != nil {
		fmt.Fprintf(fs.Output(), "%s: %v (run `%s -h` for flags)\n", fs.Name(), err, fs.Name())
		return nil, exitBadArgs, false
	}
	return pos, exitOK, true
}
