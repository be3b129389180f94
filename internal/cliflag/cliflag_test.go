package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		max     int
		wantPos []string
		wantN   string
		wantV   bool
	}{
		{"flags first", []string{"--n", "X", "-v", "add", "h"}, 0, []string{"add", "h"}, "X", true},
		{"flags last", []string{"add", "h", "--n", "X", "-v"}, 0, []string{"add", "h"}, "X", true},
		{"flags between", []string{"add", "--n=X", "h", "-v"}, 0, []string{"add", "h"}, "X", true},
		{"-- ends flags", []string{"add", "--n", "X", "--", "-v"}, 0, []string{"add", "-v"}, "X", false},
		{"max positional keeps a command's own flags", []string{"exec", "--n", "X", "host", "ls", "-v", "--n", "Y"}, 2, []string{"exec", "host", "ls", "-v", "--n", "Y"}, "X", false},
		{"none", nil, 0, nil, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			n := fs.String("n", "", "")
			v := fs.Bool("v", false, "")
			pos, err := Parse(fs, c.args, Options{MaxPositional: c.max})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(pos, c.wantPos) || *n != c.wantN || *v != c.wantV {
				t.Fatalf("Parse(%q) = %q n=%q v=%t; want %q n=%q v=%t", c.args, pos, *n, *v, c.wantPos, c.wantN, c.wantV)
			}
		})
	}
}

func TestParseBadFlag(t *testing.T) {
	for _, args := range [][]string{{"--bogus", "add"}, {"add", "x", "--bogus"}} {
		fs := flag.NewFlagSet("runbook user", flag.ContinueOnError)
		var out bytes.Buffer
		fs.SetOutput(&out)
		_, err := Parse(fs, args, Options{})
		if err == nil {
			t.Fatalf("Parse(%q): no error", args)
		}
		var msg bytes.Buffer
		if code := Report(fs, err, &msg); code != 2 {
			t.Fatalf("exit %d, want 2", code)
		}
		if !strings.Contains(msg.String(), "flag provided but not defined: -bogus") || strings.Count(msg.String(), "\n") != 1 {
			t.Fatalf("message %q: want one line naming -bogus", msg.String())
		}
		if out.Len() != 0 {
			t.Fatalf("Parse wrote to the flag set's output: %q", out.String())
		}
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	_, err := Parse(fs, []string{"a", "-h"}, Options{})
	if !errors.Is(err, flag.ErrHelp) || Report(fs, err, io.Discard) != 0 {
		t.Fatalf("-h: %v", err)
	}
}
