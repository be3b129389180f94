// Command clientcheck is a real authenticated client of the cluster: it
// creates (or joins) an end-to-end encrypted room through the control
// plane, publishes numbered messages with JetStream acks while reading them
// back, and reports sent / acked / received / lost / duplicated /
// out-of-order, reconnects and the longest gap.
//
//	clientcheck --servers tls://H1:4250,tls://H2:4250,tls://H3:4250 \
//	  --ca ca.crt --cert client.crt --key client.key --identity me.id \
//	  [--api https://H1:8470,... | --api-port 8470] [--count N] [--rate R]
//	  [--room NAME] [--json] [--timeout D]
//
// Exit status: 0 no loss and no duplication, 1 loss, duplication or a
// failed run, 2 bad input (one line on stderr).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const (
	exitOK       = 0
	exitFailed   = 1
	exitBadInput = 2
)

// defaultAPIPort is membershipd's HTTPS control-plane port.
const defaultAPIPort = 8470

// maxCount bounds --count: the probe keeps a ledger entry per message, so
// a count in the billions allocates until the process dies.
const maxCount = 10_000_000

type options struct {
	servers, apiURLs  []string
	ca, cert, key     string
	id                *identity.Identity
	count             int
	rate              float64
	room              string
	json, verbose     bool
	timeout           time.Duration
	publish, drain    time.Duration
	apiPort           int
	apiSet, apiPortOK bool
}

// run is the whole command; main only exits with its status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "clientcheck: %v\n", err)
		return exitBadInput
	}
	lvl := slog.LevelInfo
	if o.verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	rep, runErr := probe.Run(ctx, probe.Config{
		Servers: o.servers, APIURLs: o.apiURLs,
		CA: o.ca, Cert: o.cert, Key: o.key, Identity: o.id,
		Count: o.count, Rate: o.rate, Room: o.room,
		PublishTimeout: o.publish, Drain: o.drain,
		Log: log,
	})
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := struct {
			probe.Report
			OK    bool   `json:"ok"`
			Error string `json:"error,omitempty"`
		}{Report: rep, OK: runErr == nil && rep.OK()}
		if runErr != nil {
			out.Error = runErr.Error()
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "clientcheck: write report: %v\n", err)
			return exitFailed
		}
	} else if err := rep.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "clientcheck: write report: %v\n", err)
		return exitFailed
	}
	switch {
	case runErr != nil:
		fmt.Fprintf(stderr, "clientcheck: %v\n", runErr)
		return exitFailed
	case !rep.OK():
		fmt.Fprintf(stderr, "clientcheck: %d lost, %d duplicated, %d replayed\n", rep.Lost, rep.Duplicated, rep.Replays)
		return exitFailed
	}
	return exitOK
}

// parse reads and checks the command line; every error is one line.
func parse(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("clientcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	var servers, apis, idFile string
	fs.StringVar(&servers, "servers", "", "NATS seed URLs of all nodes, tls://HOST:PORT,... (required)")
	fs.StringVar(&o.ca, "ca", "", "client CA: verifies the data plane and the control plane (required)")
	fs.StringVar(&o.cert, "cert", "", "client certificate (required)")
	fs.StringVar(&o.key, "key", "", "client certificate key (required)")
	fs.StringVar(&idFile, "identity", "", "identity file: the nkey user seed, mode 0600 (required)")
	fs.StringVar(&apis, "api", "", "control-plane URLs https://HOST:PORT,... (default: each server's host on --api-port)")
	fs.IntVar(&o.apiPort, "api-port", defaultAPIPort, "control-plane port when --api is not given")
	fs.IntVar(&o.count, "count", probe.DefaultCount, "messages to publish")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second (0: as fast as acks allow)")
	fs.StringVar(&o.room, "room", "", "room name to create or join (default: a fresh clientcheck-<8 hex> room)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.DurationVar(&o.publish, "publish-timeout", probe.DefaultPublishTimeout, "per publish attempt")
	fs.DurationVar(&o.drain, "drain", probe.DefaultDrain, "wait for stragglers after the last ack")
	fs.BoolVar(&o.verbose, "v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: clientcheck --servers URL,... --ca FILE --cert FILE --key FILE --identity FILE [flags]")
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "api":
			o.apiSet = true
		case "api-port":
			o.apiPortOK = true
		}
	})

	var err error
	if o.servers, err = parseServers(servers); err != nil {
		return nil, err
	}
	switch {
	case o.apiSet && o.apiPortOK:
		return nil, errors.New("give --api or --api-port, not both")
	case o.apiSet:
		if o.apiURLs, err = parseAPIURLs(apis); err != nil {
			return nil, err
		}
	default:
		if o.apiPort < 1 || o.apiPort > 65535 {
			return nil, fmt.Errorf("--api-port %d: want 1-65535", o.apiPort)
		}
		o.apiURLs = apiURLsFor(o.servers, o.apiPort)
	}
	for _, f := range []struct{ flag, path string }{{"--ca", o.ca}, {"--cert", o.cert}, {"--key", o.key}, {"--identity", idFile}} {
		if f.path == "" {
			return nil, fmt.Errorf("%s is required", f.flag)
		}
	}
	for _, f := range []struct{ flag, path string }{{"--ca", o.ca}, {"--cert", o.cert}, {"--key", o.key}} {
		if err := readable(f.path); err != nil {
			return nil, fmt.Errorf("%s %s: %w", f.flag, f.path, err)
		}
	}
	// Parse the certificates now, so a bad file is bad input, not a failed run.
	if _, err := pki.ClientTLSConfig(o.ca, o.cert, o.key); err != nil {
		return nil, err
	}
	if o.id, err = identity.LoadFile(idFile); err != nil {
		return nil, err
	}
	switch {
	case o.count < 1:
		return nil, fmt.Errorf("--count %d: want at least 1", o.count)
	case o.count > maxCount:
		return nil, fmt.Errorf("--count %d: want at most %d (run several probes for more)", o.count, maxCount)
	case math.IsNaN(o.rate) || math.IsInf(o.rate, 0) || o.rate < 0:
		return nil, fmt.Errorf("--rate %g: want a finite number of messages per second, 0 (as fast as acks allow) or more", o.rate)
	case o.timeout <= 0:
		return nil, fmt.Errorf("--timeout %s: want a positive duration", o.timeout)
	case o.publish <= 0:
		return nil, fmt.Errorf("--publish-timeout %s: want a positive duration", o.publish)
	case o.drain <= 0:
		return nil, fmt.Errorf("--drain %s: want a positive duration", o.drain)
	}
	return &o, nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	return f.Close()
}

// parseServers checks a comma-separated list of tls://HOST:PORT URLs.
func parseServers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--servers is required: tls://HOST:PORT,... (all nodes)")
	}
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if _, _, err := hostPort(raw, "tls"); err != nil {
			return nil, fmt.Errorf("--servers: %w", err)
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, errors.New("--servers: no tls://HOST:PORT URL")
	}
	return out, nil
}

// parseAPIURLs checks a comma-separated list of https://HOST:PORT URLs.
func parseAPIURLs(s string) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if _, _, err := hostPort(raw, "https"); err != nil {
			return nil, fmt.Errorf("--api: %w", err)
		}
		out = append(out, strings.TrimSuffix(raw, "/"))
	}
	if len(out) == 0 {
		return nil, errors.New("--api: no https://HOST:PORT URL")
	}
	return out, nil
}

// hostPort parses SCHEME://HOST:PORT (nothing else).
func hostPort(raw, scheme string) (string, int, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != scheme || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", 0, fmt.Errorf("%q: want %s://HOST:PORT", raw, scheme)
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("%q: want %s://HOST:PORT", raw, scheme)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", raw)
	}
	return host, port, nil
}

// apiURLsFor derives https://HOST:PORT from each server URL's host.
func apiURLsFor(servers []string, port int) []string {
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		host, _, _ := hostPort(s, "tls") // checked by parseServers
		out = append(out, "https://"+net.JoinHostPort(host, strconv.Itoa(port)))
	}
	return out
}
