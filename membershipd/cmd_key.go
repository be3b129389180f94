package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// cmdKeyNew makes a user identity: an ed25519 key whose seed goes to a new
// 0600 file (the format clientcheck --identity and nats --nkey read), and
// whose public half, the 64-hex --sign-pub of `user add`, goes to stdout.
// Nothing secret is printed.
func cmdKeyNew(args []string, stdout, stderr io.Writer) int {
	flags := newFlagSet("key new", stderr)
	out := flags.String("out", "", "identity file to create (mode 0600; an existing file is never overwritten)")
	if code, ok := parse(flags, args); !ok {
		return code
	}
	if *out == "" {
		fmt.Fprintln(stderr, "membershipd key new: --out FILE is required (where the private identity goes, mode 0600)")
		return exitBadArgs
	}
	id, err := identity.Generate()
	if err != nil {
		fmt.Fprintf(stderr, "membershipd key new: %v\n", err)
		return exitFailed
	}
	if err := identity.WriteFile(*out, id); err != nil {
		fmt.Fprintf(stderr, "membershipd key new: %v\n", err)
		if errors.Is(err, fs.ErrExist) {
			return exitBadArgs
		}
		return exitFailed
	}
	fmt.Fprintln(stdout, id.SignPub())
	fmt.Fprintf(stderr, "wrote %s (0600, keep it secret); the line above is its public key: user add --sign-pub <it>\n", *out)
	return exitOK
}
