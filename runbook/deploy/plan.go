package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/unibus/clusterkit/membershipd/pki"
)

// File is one file the deploy writes on a host.
type File struct {
	Path   string
	Mode   os.FileMode
	Owner  string // user[:group]
	Data   []byte
	Secret bool // never printed; uploaded with its mode set before any byte
}

// SHA256 is the file's content hash (what the dry run prints).
func (f File) SHA256() string {
	h := sha256.Sum256(f.Data)
	return hex.EncodeToString(h[:])
}

// Plan is everything the deploy does on one host, in order: Prepare
// commands, then Files (atomic uploads), then Finish commands. It starts
// nothing: bringing the cluster up is `runbook start`.
type Plan struct {
	Node    NodeRow
	Prepare []string
	Files   []File
	Finish  []string
}

// Material is what the controller holds for a deploy.
type Material struct {
	Binary   []byte // linux/amd64, CGO_ENABLED=0
	Unit     []byte // runbook/membershipd-cluster.service
	CertsDir string // `runbook certs` output (pki layout)
}

// BuildPlans makes one plan per node.
func BuildPlans(t Topology, m Material) ([]Plan, error) {
	read := func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w (run `runbook certs` first)", err)
		}
		return b, nil
	}
	names := make([]string, len(t.Nodes))
	for i, n := range t.Nodes {
		names[i] = n.Name
	}
	l := pki.LayoutFor(m.CertsDir, names)
	ca, err := read(l.ClientCACert)
	if err != nil {
		return nil, err
	}
	routeCA, err := read(l.RouteCACert)
	if err != nil {
		return nil, err
	}
	secret, err := read(l.RouteSecret)
	if err != nil {
		return nil, err
	}
	svc := ServiceUser + ":" + ServiceUser
	var plans []Plan
	for _, n := range t.Nodes {
		nf := l.Nodes[n.Name]
		var node [4][]byte
		for i, f := range []string{nf.ServerCert, nf.ServerKey, nf.RouteCert, nf.RouteKey} {
			if node[i], err = read(f); err != nil {
				return nil, err
			}
		}
		plans = append(plans, Plan{
			Node: n,
			Prepare: []string{
				"id -u " + ServiceUser + " >/dev/null 2>&1 || useradd --system --home-dir " + Root + " --shell /usr/sbin/nologin " + ServiceUser,
				"install -d -m 0755 -o root -g root " + Root + " " + Root + "/tls",
				"install -d -m 0700 -o " + ServiceUser + " -g " + ServiceUser + " " + Root + "/secrets " + Root + "/local_files",
			},
			Files: []File{
				{Path: BinaryPath, Mode: 0o755, Owner: "root:root", Data: m.Binary},
				{Path: Root + "/tls/ca.crt", Mode: 0o644, Owner: "root:root", Data: ca},
				{Path: Root + "/tls/cluster-ca.crt", Mode: 0o644, Owner: "root:root", Data: routeCA},
				{Path: Root + "/tls/server.crt", Mode: 0o644, Owner: "root:root", Data: node[0]},
				{Path: Root + "/tls/server.key", Mode: 0o600, Owner: svc, Data: node[1], Secret: true},
				{Path: Root + "/tls/route.crt", Mode: 0o644, Owner: "root:root", Data: node[2]},
				{Path: Root + "/tls/route.key", Mode: 0o600, Owner: svc, Data: node[3], Secret: true},
				{Path: RouteSecretPath, Mode: 0o600, Owner: svc, Data: secret, Secret: true},
				{Path: EnvPath, Mode: 0o644, Owner: "root:root", Data: []byte(t.ClusterEnv(n))},
				{Path: UnitPath, Mode: 0o644, Owner: "root:root", Data: m.Unit},
			},
			Finish: []string{"systemctl daemon-reload"},
		})
	}
	return plans, nil
}

// PrintPlan writes the dry run: per host every file (path, mode, owner,
// checksum) and every command, and touches nothing.
func PrintPlan(w io.Writer, plans []Plan) {
	for _, p := range plans {
		user := p.Node.User
		if user == "" {
			user = "ssh_config's User"
		}
		fmt.Fprintf(w, "== %s (ssh %s as %s, %s)\n", p.Node.Name, p.Node.Alias, user, p.Node.Address)
		for _, c := range p.Prepare {
			fmt.Fprintf(w, "  run    %s\n", c)
		}
		for _, f := range p.Files {
			note := ""
			if f.Secret {
				note = "  (secret: mode set before any byte is written)"
			}
			fmt.Fprintf(w, "  write  %-45s mode %04o owner %-13s sha256 %s  %d bytes%s\n", f.Path, f.Mode, f.Owner, f.SHA256()[:16], len(f.Data), note)
		}
		for _, c := range p.Finish {
			fmt.Fprintf(w, "  run    %s\n", c)
		}
	}
	fmt.Fprintln(w, "dry run: nothing was changed. Run again with --yes to apply; nothing is started (use `runbook start`).")
}

// Host is what applying a plan needs from an SSH connection.
type Host interface {
	Sudo(ctx context.Context, cmd string) (stdout string, exit int, err error)
	WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode, owner string) (changed bool, err error)
	Close() error
}

// Dialer opens a Host for a node.
type Dialer func(ctx context.Context, n NodeRow) (Host, error)

// Result is what applying one plan did.
type Result struct {
	Node    string
	Changed []string
	Err     error
}

// Apply runs every plan, hosts in parallel, printing prefixed lines and a
// progress line per host. It returns per-host results in plan order.
func Apply(ctx context.Context, plans []Plan, dial Dialer, out io.Writer) []Result {
	var mu sync.Mutex
	say := func(node, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "[%s] %s\n", node, fmt.Sprintf(format, args...))
	}
	results := make([]Result, len(plans))
	var wg sync.WaitGroup
	for i, p := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = applyOne(ctx, p, dial, say)
		}()
	}
	wg.Wait()
	return results
}

func applyOne(ctx context.Context, p Plan, dial Dialer, say func(node, format string, args ...any)) Result {
	r := Result{Node: p.Node.Name}
	h, err := dial(ctx, p.Node)
	if err != nil {
		r.Err = err
		say(p.Node.Name, "FAILED: %v", err)
		return r
	}
	defer func() { _ = h.Close() }()
	steps := len(p.Prepare) + len(p.Files) + len(p.Finish)
	done := 0
	run := func(cmd string) error {
		out, code, err := h.Sudo(ctx, cmd)
		done++
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if code != 0 {
			return fmt.Errorf("%s: exit %d: %s", cmd, code, strings.TrimSpace(out))
		}
		return nil
	}
	for _, c := range p.Prepare {
		if r.Err = run(c); r.Err != nil {
			say(p.Node.Name, "FAILED: %v", r.Err)
			return r
		}
	}
	for _, f := range p.Files {
		changed, err := h.WriteFile(ctx, f.Path, f.Data, f.Mode, f.Owner)
		done++
		if err != nil {
			r.Err = fmt.Errorf("write %s: %w", f.Path, err)
			say(p.Node.Name, "FAILED: %v", r.Err)
			return r
		}
		if changed {
			r.Changed = append(r.Changed, f.Path)
			say(p.Node.Name, "wrote %s (%04o %s) [%d/%d]", f.Path, f.Mode, f.Owner, done, steps)
		}
	}
	if len(r.Changed) > 0 {
		for _, c := range p.Finish {
			if r.Err = run(c); r.Err != nil {
				say(p.Node.Name, "FAILED: %v", r.Err)
				return r
			}
		}
	}
	if len(r.Changed) == 0 {
		say(p.Node.Name, "up to date: nothing changed")
	} else {
		say(p.Node.Name, "done: %d files changed", len(r.Changed))
	}
	return r
}
