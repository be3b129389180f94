package sshtarget

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/runbook/deploy"
)

// SnapshotDir is where a run that may change hosts keeps copies of the
// operator's files on each host (root, 0700) until it has restored them.
const SnapshotDir = deploy.Root + "/.spec-snapshot"

// deployedFile is a file the runbook puts on a host. Secrets are compared
// by hash only: they are never copied, not even on the host.
type deployedFile struct {
	Path   string
	Secret bool
}

// DeployedFiles are the files a snapshot covers: everything `runbook
// deploy` writes, the internal identity the node makes, and the rollout's
// backup (absent until the first rollout).
var DeployedFiles = []deployedFile{
	{deploy.BinaryPath, false},
	{deploy.BinaryPath + ".bak", false},
	{deploy.UnitPath, false},
	{deploy.EnvPath, false},
	{deploy.Root + "/tls/ca.crt", false},
	{deploy.Root + "/tls/cluster-ca.crt", false},
	{deploy.Root + "/tls/server.crt", false},
	{deploy.Root + "/tls/route.crt", false},
	{deploy.Root + "/tls/server.key", true},
	{deploy.Root + "/tls/route.key", true},
	{deploy.RouteSecretPath, true},
	{deploy.InternalIDPath, true},
}

// FileState is one file on one host; Exists false means absent.
type FileState struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	Mode   string `json:"mode,omitempty"`
	Owner  string `json:"owner,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

func (f FileState) String() string {
	if !f.Exists {
		return f.Path + " absent"
	}
	return fmt.Sprintf("%s %s %s sha256:%.16s", f.Path, f.Mode, f.Owner, f.SHA256)
}

// NodeState is a host as a snapshot sees it.
type NodeState struct {
	Node    string      `json:"node"`
	Files   []FileState `json:"files"`
	Active  bool        `json:"active"`
	MainPID string      `json:"main_pid"`
	// RunningSHA256 is the checksum of the running process's executable
	// (/proc/PID/exe): what runs, not what is on disk.
	RunningSHA256 string `json:"running_sha256,omitempty"`
	// Version is what /healthz reports.
	Version string `json:"version"`
}

// File returns the state of path.
func (s NodeState) File(path string) FileState {
	for _, f := range s.Files {
		if f.Path == path {
			return f
		}
	}
	return FileState{Path: path}
}

// Snapshot is every node's state at one moment.
type Snapshot struct {
	At    time.Time            `json:"at"`
	Nodes map[string]NodeState `json:"nodes"`
	// Kept: the hosts hold copies of the non-secret files in SnapshotDir.
	Kept bool `json:"kept"`
}

// stateScript prints one line per file ("F path mode owner sha" or
// "F path -"), then the unit's state, main PID and running executable.
func stateScript() string {
	var paths []string
	for _, f := range DeployedFiles {
		paths = append(paths, deploy.Quote(f.Path))
	}
	u := deploy.UnitName
	return `for f in ` + strings.Join(paths, " ") + `; do
  if [ -e "$f" ]; then printf 'F %s %s %s\n' "$f" "$(stat -c '%a %U:%G' "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
  else printf 'F %s -\n' "$f"; fi
done
printf 'A %s\n' "$(systemctl is-active ` + u + `)"
pid=$(systemctl show -p MainPID --value ` + u + `)
printf 'P %s\n' "${pid:-0}"
if [ -n "$pid" ] && [ "$pid" != 0 ] && [ -e /proc/$pid/exe ]; then printf 'X %s\n' "$(sha256sum </proc/$pid/exe | cut -d' ' -f1)"; fi
`
}

func parseState(node, out string) (NodeState, error) {
	s := NodeState{Node: node, MainPID: "0"}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "F":
			switch {
			case len(f) == 3 && f[2] == "-":
				s.Files = append(s.Files, FileState{Path: f[1]})
			case len(f) == 5:
				s.Files = append(s.Files, FileState{Path: f[1], Exists: true, Mode: f[2], Owner: f[3], SHA256: f[4]})
			default:
				return s, fmt.Errorf("state of %s: unexpected line %q", node, l)
			}
		case "A":
			s.Active = f[1] == "active"
		case "P":
			s.MainPID = f[1]
		case "X":
			s.RunningSHA256 = f[1]
		}
	}
	if len(s.Files) != len(DeployedFiles) {
		return s, fmt.Errorf("state of %s: %d of %d files reported", node, len(s.Files), len(DeployedFiles))
	}
	return s, nil
}

// State reads one node's files and unit over SSH, and its /healthz version.
func (c *Cluster) State(ctx context.Context, n *Node) (NodeState, error) {
	r, err := n.sudo(ctx, stateScript())
	if err != nil {
		return NodeState{}, fmt.Errorf("read state of %s: %w", n.row.Name, err)
	}
	if r.ExitCode != 0 {
		return NodeState{}, fmt.Errorf("read state of %s: exit %d: %s", n.row.Name, r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	s, err := parseState(n.row.Name, r.Stdout)
	if err != nil {
		return s, err
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return s, err
	}
	if p := hc.Get(ctx, n.HealthzURL()); p.Err == nil {
		s.Version = p.Health.Version
	}
	return s, nil
}

// Observe reads every node's state without changing anything.
func (c *Cluster) Observe(ctx context.Context) (*Snapshot, error) {
	s := &Snapshot{At: time.Now(), Nodes: map[string]NodeState{}}
	for _, n := range c.nodes {
		st, err := c.State(ctx, n)
		if err != nil {
			return nil, err
		}
		s.Nodes[n.row.Name] = st
	}
	return s, nil
}

// Snapshot records every node's state. With keep it also copies each
// non-secret file into SnapshotDir on its own host (so Restore can put the
// operator's binary, unit and config back without moving them over the
// network); without keep it writes nothing anywhere. A SnapshotDir left by
// an earlier run that never finished restoring is refused: its copies may
// be the only record of the operator's files.
func (c *Cluster) Snapshot(ctx context.Context, keep bool) (*Snapshot, error) {
	s, err := c.Observe(ctx)
	if err != nil {
		return nil, err
	}
	if !keep {
		return s, nil
	}
	for _, n := range c.nodes {
		r, err := n.sudo(ctx, "test -e "+SnapshotDir)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", n.row.Name, err)
		}
		if r.ExitCode == 0 {
			return nil, fmt.Errorf("snapshot %s: %s exists: an earlier spec run did not finish restoring; its copies of the operator's files and their checksums (manifest) are there: put back what differs, remove the directory, then rerun", n.row.Name, SnapshotDir)
		}
	}
	for _, n := range c.nodes {
		st := s.Nodes[n.row.Name]
		cmds := []string{"install -d -m 0700 -o root -g root " + SnapshotDir}
		var manifest []string
		for i, f := range DeployedFiles {
			fs := st.Files[i]
			manifest = append(manifest, fs.String())
			if f.Secret || !fs.Exists {
				continue
			}
			cmds = append(cmds, "cp -a "+deploy.Quote(f.Path)+" "+deploy.Quote(keptPath(f.Path)))
		}
		cmds = append(cmds, "printf '%s\\n' "+quoteAll(manifest)+" > "+SnapshotDir+"/manifest", "chmod 0600 "+SnapshotDir+"/manifest")
		r, err := n.sudo(ctx, strings.Join(cmds, " && "))
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", r.ExitCode, strings.TrimSpace(r.Stderr))
		}
		if err != nil {
			// None existed before this call (checked above): leave no
			// half-made snapshot that would block the next run.
			if rerr := c.Release(ctx); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return nil, fmt.Errorf("snapshot %s: %w", n.row.Name, err)
		}
	}
	s.Kept = true
	return s, nil
}

func keptPath(p string) string {
	return SnapshotDir + "/" + strings.ReplaceAll(strings.TrimPrefix(p, "/"), "/", "_")
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = deploy.Quote(s)
	}
	return strings.Join(q, " ")
}

// Diff lists how cur differs from s: files (mode, owner, checksum,
// presence), the running executable and the /healthz version, per node.
// Restarts (a new main PID) are not differences: a disruptive run restarts
// nodes by design; callers that must see none compare MainPID themselves.
func (s *Snapshot) Diff(cur *Snapshot) []string {
	var out []string
	names := make([]string, 0, len(s.Nodes))
	for name := range s.Nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		was, now := s.Nodes[name], cur.Nodes[name]
		for i, f := range was.Files {
			if i >= len(now.Files) {
				out = append(out, fmt.Sprintf("%s: %s not observed", name, f.Path))
				continue
			}
			if f != now.Files[i] {
				out = append(out, fmt.Sprintf("%s: %s, was %s", name, now.Files[i], f))
			}
		}
		if now.RunningSHA256 != was.RunningSHA256 {
			out = append(out, fmt.Sprintf("%s: runs executable sha256:%.16s, was sha256:%.16s", name, now.RunningSHA256, was.RunningSHA256))
		}
		if now.Version != was.Version {
			out = append(out, fmt.Sprintf("%s: /healthz version %q, was %q", name, now.Version, was.Version))
		}
		if now.Active != was.Active {
			out = append(out, fmt.Sprintf("%s: unit active=%v, was %v", name, now.Active, was.Active))
		}
	}
	return out
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Restored  []string // "node: path" put back (or removed: absent before)
	Restarted []string // nodes restarted, in order
	Took      time.Duration
}

// Restore puts every changed non-secret file back from the hosts' copies,
// then restarts only the nodes that were restarted or stopped during the
// run and whose files, unit state or running executable differ from s, one at a time, each time waiting until every
// node is healthy (within wait), and then checks that every node matches
// s. The copies stay until Release. A changed secret cannot be restored (it was never
// copied) and is an error naming it. Safe to call more than once.
func (c *Cluster) Restore(ctx context.Context, s *Snapshot, wait time.Duration) (RestoreResult, error) {
	start := time.Now()
	var res RestoreResult
	if !s.Kept {
		return res, errors.New("restore: the snapshot kept no copies (a read-only run): nothing to restore from")
	}
	hc, err := chaos.NewHealthClient(c.TLS().ClientCA)
	if err != nil {
		return res, err
	}
	var errs []error
	for _, n := range c.nodes {
		was := s.Nodes[n.row.Name]
		now, err := c.State(ctx, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var cmds []string
		unitChanged := false
		for i, f := range DeployedFiles {
			w, g := was.Files[i], now.Files[i]
			if w == g {
				continue
			}
			if f.Secret {
				errs = append(errs, fmt.Errorf("restore %s: secret %s changed during the run (%s, was %s): secrets are never copied; redeploy it with runbook deploy --yes", n.row.Name, f.Path, g, w))
				continue
			}
			if w.Exists {
				tmp := deploy.Quote(f.Path + ".spec-restore")
				// Copy then rename: atomic, and a running binary may be replaced.
				cmds = append(cmds, "cp -a "+deploy.Quote(keptPath(f.Path))+" "+tmp+" && mv -f "+tmp+" "+deploy.Quote(f.Path))
			} else {
				cmds = append(cmds, "rm -f "+deploy.Quote(f.Path))
			}
			res.Restored = append(res.Restored, n.row.Name+": "+f.Path)
			unitChanged = unitChanged || f.Path == deploy.UnitPath
		}
		if unitChanged {
			cmds = append(cmds, "systemctl daemon-reload")
		}
		if len(cmds) > 0 {
			r, err := n.sudo(ctx, strings.Join(cmds, " && "))
			if err == nil && r.ExitCode != 0 {
				err = fmt.Errorf("exit %d: %s", r.ExitCode, strings.TrimSpace(r.Stderr))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("restore files on %s: %w", n.row.Name, err))
				continue
			}
		}
		// The process that ran before the run still runs: it has the
		// operator's binary and config loaded, whatever happened on disk.
		sameProcess := now.Active && now.MainPID == was.MainPID
		unchanged := len(cmds) == 0 && now.Active == was.Active && now.RunningSHA256 == was.RunningSHA256 && now.Version == was.Version
		if sameProcess || unchanged {
			continue
		}
		if was.Active {
			if err := n.systemctl(ctx, "restart"); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Restarted = append(res.Restarted, n.row.Name)
			wctx, cancel := context.WithTimeout(ctx, wait)
			_, err := hc.WaitHealthy(wctx, c.Nodes()...)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("after restoring %s: %w", n.row.Name, err))
				break // never restart the next node into an unhealthy cluster
			}
		}
	}
	res.Took = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	cur, err := c.Observe(ctx)
	if err != nil {
		return res, err
	}
	if d := s.Diff(cur); len(d) > 0 {
		return res, fmt.Errorf("after restore the hosts still differ from the snapshot:\n  %s", strings.Join(d, "\n  "))
	}
	res.Took = time.Since(start)
	return res, nil
}

// Release removes the hosts' copies (SnapshotDir). Call it only after a
// Restore that succeeded: until then the copies are the operator's files.
func (c *Cluster) Release(ctx context.Context) error {
	var errs []error
	for _, n := range c.nodes {
		r, err := n.sudo(ctx, "rm -rf "+SnapshotDir)
		if err == nil && r.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", r.ExitCode, strings.TrimSpace(r.Stderr))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s on %s: %w", SnapshotDir, n.row.Name, err))
		}
	}
	return errors.Join(errs...)
}
