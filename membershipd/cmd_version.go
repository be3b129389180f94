package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

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
// A bad flag is one clear line plus a hint, not a wall of usage.
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err == flag.ErrHelp {
		fs.PrintDefaults()
		return exitOK, false
	}
	if err != nil {
		fmt.Fprintf(out, "%s: %v (run `%s -h` for flags)\n", fs.Name(), err, fs.Name())
		return exitBadArgs, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitBadArgs, false
	}
	return exitOK, true
}
