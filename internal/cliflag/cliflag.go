// Package cliflag parses a command's flags wherever the operator puts them:
// before, between and after the positional words (`user add --handle h
// --nodes X`). The standard flag package stops at the first positional word
// and silently leaves every later flag as an argument; here parsing resumes
// after each positional word. "--" still ends the flags.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Options tunes Parse.
type Options struct {
	// MaxPositional, when > 0, ends flag parsing once that many positional
	// words have been seen: everything after them is positional too (the
	// command words of `vps-sim exec HOST CMD ARGS...`).
	MaxPositional int
}

// Parse parses args into fs, flags in any position, and returns the
// positional words in order. A bad flag is flag's own one-line error (it
// names the flag); -h/--help returns flag.ErrHelp. fs's output is silenced
// while parsing: the caller prints the error (see Report).
func Parse(fs *flag.FlagSet, args []string, o Options) ([]string, error) {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			return pos, nil
		}
		// flag.Parse consumed a "--" terminator: the rest is positional.
		if n := len(rest) - len(left); n > 0 && rest[n-1] == "--" {
			return append(pos, left...), nil
		}
		pos = append(pos, left[0])
		rest = left[1:]
		if o.MaxPositional > 0 && len(pos) >= o.MaxPositional {
			return append(pos, rest...), nil
		}
	}
}

// Report prints a Parse error the way every command does, and returns the
// exit status: 0 after -h (the flags are printed), 2 for a bad flag.
func Report(fs *flag.FlagSet, err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v (run `%s -h` for its flags)\n", fs.Name(), err, fs.Name())
	return 2
}
