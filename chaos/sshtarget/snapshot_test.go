package sshtarget

import (
	"fmt"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/runbook/deploy"
)

// stateOutput is what stateScript prints on a host with every file but
// the rollout backup.
func stateOutput(binSHA, runSHA, pid string) string {
	var b strings.Builder
	for _, f := range DeployedFiles {
		switch f.Path {
		case deploy.BinaryPath + ".bak":
			fmt.Fprintf(&b, "F %s -\n", f.Path)
		case deploy.BinaryPath:
			fmt.Fprintf(&b, "F %s 755 root:root %s\n", f.Path, binSHA)
		default:
			fmt.Fprintf(&b, "F %s 644 root:root %x\n", f.Path, len(f.Path))
		}
	}
	fmt.Fprintf(&b, "A active\nP %s\nX %s\n", pid, runSHA)
	return b.String()
}

func TestParseState(t *testing.T) {
	s, err := parseState("n1", stateOutput("aaaa", "aaaa", "42"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Active || s.MainPID != "42" || s.RunningSHA256 != "aaaa" {
		t.Fatalf("unit state: %+v", s)
	}
	if f := s.File(deploy.BinaryPath); !f.Exists || f.SHA256 != "aaaa" || f.Mode != "755" {
		t.Fatalf("binary: %+v", f)
	}
	if f := s.File(deploy.BinaryPath + ".bak"); f.Exists {
		t.Fatalf("backup should be absent: %+v", f)
	}
	if _, err := parseState("n1", "F /x -\nA active\n"); err == nil {
		t.Fatal("a short report must be an error, not a snapshot with files missing")
	}
}

func TestDiff(t *testing.T) {
	was, _ := parseState("n1", stateOutput("aaaa", "aaaa", "42"))
	before := &Snapshot{Nodes: map[string]NodeState{"n1": was}}

	restarted, _ := parseState("n1", stateOutput("aaaa", "aaaa", "43"))
	if d := before.Diff(&Snapshot{Nodes: map[string]NodeState{"n1": restarted}}); len(d) != 0 {
		t.Fatalf("a restart on the same binary is no difference: %v", d)
	}
	upgraded, _ := parseState("n1", stateOutput("bbbb", "bbbb", "44"))
	d := before.Diff(&Snapshot{Nodes: map[string]NodeState{"n1": upgraded}})
	if len(d) != 2 || !strings.Contains(d[0], deploy.BinaryPath) || !strings.Contains(d[1], "runs executable") {
		t.Fatalf("want the binary and the running executable named: %v", d)
	}
}

func TestKeptPath(t *testing.T) {
	if got := keptPath(deploy.EnvPath); got != SnapshotDir+"/opt_unibus_cluster.env" {
		t.Fatal(got)
	}
}
