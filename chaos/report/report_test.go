package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"
)

// it is an It spec report labelled with claim ids.
func it(state types.SpecState, msg string, ids ...string) types.SpecReport {
	var labels []string
	for _, id := range ids {
		labels = append(labels, "claim:"+id)
	}
	return types.SpecReport{
		LeafNodeType:   types.NodeTypeIt,
		LeafNodeText:   strings.Join(ids, ","),
		LeafNodeLabels: labels,
		State:          state,
		RunTime:        time.Second,
		Failure:        types.Failure{Message: msg},
	}
}

func suiteNode(t types.NodeType, state types.SpecState, msg string) types.SpecReport {
	return types.SpecReport{
		LeafNodeType: t,
		State:        state,
		Failure: types.Failure{
			Message:  msg,
			Location: types.CodeLocation{FileName: "/src/specs/suite_test.go", LineNumber: 62},
		},
	}
}

func rowOf(t *testing.T, c Checklist, id string) Row {
	t.Helper()
	for _, r := range c.Claims {
		if r.Claim == id {
			return r
		}
	}
	t.Fatalf("no row for claim %s in %+v", id, c.Claims)
	return Row{}
}

func render(t *testing.T, c Checklist) string {
	t.Helper()
	var b strings.Builder
	if err := WriteChecklist(&b, c); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestChecklistStatesAndReasons(t *testing.T) {
	longSkip := "needs a fresh cluster: on the ssh target only with --allow-wipe\n(it deletes every node's data)\n\nmore detail\nand more"
	r := types.Report{
		SuiteConfig: types.SuiteConfig{LabelFilter: "!slow"},
		SpecReports: types.SpecReports{
			suiteNode(types.NodeTypeBeforeSuite, types.SpecStatePassed, ""),
			it(types.SpecStatePassed, "", "r3"),
			it(types.SpecStateFailed, "Timed out after 30s.\nExpected healthz 200", "quorum-start"),
			it(types.SpecStateSkipped, longSkip, "user-add-live"),
			it(types.SpecStatePassed, "", "failover-zero-loss"),
			it(types.SpecStateSkipped, "disruptive: opt in with --allow-disruptive", "failover-zero-loss"),
			// Skipped by the label filter: Ginkgo records no message.
			{LeafNodeType: types.NodeTypeIt, LeafNodeLabels: []string{"claim:no-self-serve", "slow"}, State: types.SpecStateSkipped},
		},
	}
	c := NewChecklist(r, "inproc")
	if c.SetupFailed || len(c.Suite) != 0 {
		t.Fatalf("passed BeforeSuite reported as a problem: %+v", c.Suite)
	}
	want := map[string]struct {
		state  string
		reason string
	}{
		"r3":                 {"passed", ""},
		"quorum-start":       {"FAILED", "failed: Timed out after 30s. Expected healthz 200"},
		"user-add-live":      {"skipped", "skipped: needs a fresh cluster: on the ssh target only with --allow-wipe (it deletes every node's data) more detail"},
		"failover-zero-loss": {"partial", "skipped: disruptive: opt in with --allow-disruptive"},
		"no-self-serve":      {"skipped", "skipped: not selected by --label-filter=!slow"},
		"acl":                {"no spec", ""},
	}
	for id, w := range want {
		row := rowOf(t, c, id)
		if row.State != w.state {
			t.Errorf("%s: state %q, want %q", id, row.State, w.state)
		}
		switch {
		case w.reason == "" && len(row.Reasons) != 0:
			t.Errorf("%s: reasons %q, want none", id, row.Reasons)
		case w.reason != "" && (len(row.Reasons) != 1 || row.Reasons[0] != w.reason):
			t.Errorf("%s: reasons %q, want [%q]", id, row.Reasons, w.reason)
		}
	}
	// Claims not on the target are left out.
	for _, row := range c.Claims {
		if row.Claim == "deploy-apply" {
			t.Errorf("ssh-only claim deploy-apply listed on inproc")
		}
	}

	out := render(t, c)
	if strings.Contains(out, "SETUP FAILED") {
		t.Errorf("setup failure printed for a passing BeforeSuite:\n%s", out)
	}
	// The reason is printed on the line right under its claim's row.
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "user-add-live ") {
			if i+1 >= len(lines) || !strings.Contains(lines[i+1], "↳ skipped: needs a fresh cluster") {
				t.Errorf("skip reason not under its row:\n%s", out)
			}
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "more detail") && strings.Contains(l, "and more") {
			t.Errorf("reason not trimmed to its first lines: %q", l)
		}
	}
}

func TestChecklistBeforeSuiteFailure(t *testing.T) {
	msg := "--target=ssh\nUnexpected error:\n    <*fs.PathError>: stat /nonexistent: no such file or directory\nline4\nline5\nline6 beyond the cut"
	for _, nt := range []types.NodeType{types.NodeTypeBeforeSuite, types.NodeTypeSynchronizedBeforeSuite} {
		// Ginkgo runs no spec after a failed BeforeSuite: the report holds
		// only the suite node.
		r := types.Report{SpecReports: types.SpecReports{suiteNode(nt, types.SpecStateFailed, msg)}}
		c := NewChecklist(r, "ssh")
		if !c.SetupFailed || len(c.Suite) != 1 {
			t.Fatalf("%s: setup failure not recorded: %+v", nt, c)
		}
		p := c.Suite[0]
		if p.Node != nt.String() || p.Location != "suite_test.go:62" || !strings.Contains(p.Message, "stat /nonexistent: no such file or directory") {
			t.Errorf("%s: problem %+v", nt, p)
		}
		if strings.Contains(p.Message, "beyond the cut") {
			t.Errorf("message not cut to its first lines: %q", p.Message)
		}
		for _, row := range c.Claims {
			if row.State != "not run" || len(row.Reasons) != 1 || row.Reasons[0] != "not run: the suite setup ("+nt.String()+" failed)" {
				t.Errorf("%s: row %+v, want not run because setup failed", nt, row)
			}
		}
		out := render(t, c)
		for _, want := range []string{"SUITE SETUP FAILED", nt.String() + " failed at suite_test.go:62", "stat /nonexistent: no such file or directory"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", nt, want, out)
			}
		}
		if strings.Contains(out, "no spec") {
			t.Errorf("%s: setup failure shown as no spec:\n%s", nt, out)
		}
	}
}

func TestChecklistAfterSuiteFailureAndInterrupt(t *testing.T) {
	r := types.Report{
		SpecialSuiteFailureReasons: []string{"Interrupted by User"},
		SpecReports: types.SpecReports{
			it(types.SpecStatePassed, "", "r3"),
			suiteNode(types.NodeTypeAfterSuite, types.SpecStateFailed, "restore binary on n2: exit 1"),
			suiteNode(types.NodeTypeCleanupAfterSuite, types.SpecStatePanicked, ""),
		},
	}
	r.SpecReports[2].Failure.ForwardedPanic = "nil map"
	c := NewChecklist(r, "ssh")
	if c.SetupFailed {
		t.Fatal("AfterSuite failure counted as a setup failure")
	}
	if rowOf(t, c, "r3").State != "passed" || rowOf(t, c, "acl").State != "no spec" {
		t.Errorf("rows changed by a teardown failure: %+v", c.Claims)
	}
	out := render(t, c)
	for _, want := range []string{"AfterSuite failed at suite_test.go:62", "restore binary on n2: exit 1", "panic: nil map", "suite failed", "Interrupted by User"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteChecklistFiles(t *testing.T) {
	r := types.Report{SpecReports: types.SpecReports{
		it(types.SpecStateSkipped, "needs a cluster of 3 nodes", "r3"),
	}}
	r.SpecReports[0].ReportEntries = types.ReportEntries{{Name: "failover gap", Value: types.WrapEntryValue("29ms")}}
	dir := t.TempDir()
	if err := WriteChecklistFiles(dir, NewChecklist(r, "inproc"), Measurements(r)); err != nil {
		t.Fatal(err)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "checklist.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"↳ skipped: needs a cluster of 3 nodes", "Measured in this run", "failover gap", "29ms"} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("checklist.txt lacks %q:\n%s", want, txt)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "checklist.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Target       string        `json:"target"`
		SetupFailed  bool          `json:"setup_failed"`
		Claims       []Row         `json:"claims"`
		Measurements []Measurement `json:"measurements"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Target != "inproc" || got.SetupFailed || len(got.Measurements) != 1 || got.Measurements[0].Value != "29ms" {
		t.Errorf("checklist.json: %s", b)
	}
	for _, row := range got.Claims {
		if row.Claim == "r3" && (row.State != "skipped" || len(row.Reasons) != 1 || row.Reasons[0] != "skipped: needs a cluster of 3 nodes") {
			t.Errorf("r3 row in json: %+v", row)
		}
	}
}
