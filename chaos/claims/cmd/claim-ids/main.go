// Command claim-ids prints the registered claim ids, one a line: those a
// target must pass (--target inproc|process|ssh), or all. specs/each-claim.sh runs
// each claim alone with it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/unibus/clusterkit/chaos/claims"
)

func main() {
	target := flag.String("target", "", "only the claims this target must pass: inproc, process or ssh (default: all)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "claim-ids: unexpected argument %q (only --target)\n", flag.Arg(0))
		os.Exit(2)
	}
	for _, c := range claims.All {
		switch *target {
		case "":
		case "inproc", "ssh", "process":
			if !c.On(*target) {
				continue
			}
		default:
			fmt.Fprintf(os.Stderr, "claim-ids: unknown --target %q (want inproc, process or ssh)\n", *target)
			os.Exit(2)
		}
		fmt.Println(c.ID)
	}
}
