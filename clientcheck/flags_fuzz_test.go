package main

import (
	"io"
	"math"
	"strconv"
	"testing"
)

// The URL list parsers never panic; every accepted entry is SCHEME://HOST:PORT.
func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"tls://127.0.0.1:4251,tls://[::1]:4252", "tls://h", ",,", "tls://u@h:1", "tls://h:1/x?y#z", "https://h:8470/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if out, err := parseServers(s); err == nil {
			for _, u := range out {
				if _, p, err := hostPort(u, "tls"); err != nil || p < 1 || p > 65535 {
					t.Fatalf("accepted server %q (%v)", u, err)
				}
			}
		}
		if out, err := parseAPIURLs(s); err == nil {
			for _, u := range out {
				if _, _, err := hostPort(u, "https"); err != nil {
					t.Fatalf("accepted api URL %q (%v)", u, err)
				}
			}
		}
	})
}

// --count and --rate: anything accepted is within bounds; NaN, infinities,
// negatives and counts past the maximum are bad input.
func FuzzCountRate(f *testing.F) {
	for _, c := range [][2]string{{"1000", "0"}, {"1e12", "NaN"}, {"10000001", "+Inf"}, {"-1", "-0"}, {"0x10", "1e309"}} {
		f.Add(c[0], c[1])
	}
	fx := fixture(f)
	f.Fuzz(func(t *testing.T, count, rate string) {
		o, err := parse([]string{"--servers", "tls://127.0.0.1:4251", "--ca", fx.ca, "--cert", fx.cert, "--key", fx.key,
			"--identity", fx.id, "--count", count, "--rate", rate}, io.Discard)
		if err != nil {
			return
		}
		if o.count < 1 || o.count > maxCount {
			t.Fatalf("--count %q accepted as %d", count, o.count)
		}
		if math.IsNaN(o.rate) || math.IsInf(o.rate, 0) || o.rate < 0 {
			t.Fatalf("--rate %q accepted as %v", rate, o.rate)
		}
		if n, err := strconv.ParseInt(count, 0, 64); err == nil && n != int64(o.count) {
			t.Fatalf("--count %q read as %d", count, o.count)
		}
	})
}
