package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/unibus/clusterkit/internal/cliflag"
)

// parseArgs parses fs with flags in any position (before, between or after
// the positional words, as operators type them) and returns the positional
// words. ok false means: exit with code (0 after -h, 2 for a bad flag,
// which the message names).
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) (pos []string, code int, ok bool) {
	fs.SetOutput(stderr)
	pos, err := cliflag.Parse(fs, args, cliflag.Options{})
	if err != nil {
		return nil, cliflag.Report(fs, err, stderr), false
	}
	return pos, 0, true
}

// parseFlags is parseArgs for a command that takes no positional words.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	pos, code, ok := parseArgs(fs, args, stderr)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (run `%s -h` for its flags)\n", fs.Name(), pos[0], fs.Name())
		return 2, false
	}
	return 0, true
}
