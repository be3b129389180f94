package report

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/chaos/validate"
)

// synthRun is a 3-node run of durMS with a kill of n1 and a partition of
// n2, client ops that fail or time out on the victim during its fault, one
// failover gap, and one lost-write anomaly. n sets the client op count.
func synthRun(n int, durMS int64) Page {
	rng := rand.New(rand.NewPCG(7, 11))
	nodes := []string{"n1", "n2", "n3"}
	faults := []fault.Evidence{
		{Fault: "kill", Nodes: []string{"n1"}, StartMS: durMS / 6, InjectedMS: durMS/6 + 300, HealStartMS: durMS / 3, EndMS: durMS/3 + 2500},
		{Fault: "partition", Nodes: []string{"n2"}, Args: fault.Args{Rest: []string{"n1", "n3"}}, StartMS: durMS / 2, InjectedMS: durMS/2 + 800, HealStartMS: durMS * 2 / 3, EndMS: durMS*2/3 + 3000},
	}
	down := func(node string, ms int64) bool {
		for _, f := range faults {
			if f.Nodes[0] == node && ms >= f.StartMS && ms < f.HealStartMS {
				return true
			}
		}
		return false
	}
	var ops []history.Op
	add := func(op history.Op) int64 {
		op.ID = int64(len(ops) + 1)
		ops = append(ops, op)
		return op.ID
	}
	for _, node := range nodes {
		for t := int64(0); t < durMS; t += 200 {
			code := "200"
			if down(node, t) {
				code = "503"
				if node == "n1" {
					code = ""
				}
			}
			add(history.Op{Process: "health-" + node, Node: node, Kind: history.Health, Value: code, InvokeMS: t, EndMS: t + 5, Outcome: history.OK})
		}
	}
	procs := []string{"probe-1", "probe-2", "probe-3", "probe-4", "users-1", "users-2", "conn-1", "req-1"}
	gapFrom, gapTo := durMS/6, durMS/6+4000 // no receive during the failover
	var lost int64
	for i := range n {
		p := procs[i%len(procs)]
		node := nodes[rng.IntN(3)]
		at := int64(i) * durMS / int64(n)
		op := history.Op{Process: p, Node: node, InvokeMS: at, EndMS: at + 2 + rng.Int64N(30), Outcome: history.OK}
		switch {
		case strings.HasPrefix(p, "probe"):
			op.Kind, op.Key, op.Value = history.Publish, "room-"+p, fmt.Sprintf("%s-%d", p, i)
		case strings.HasPrefix(p, "users"):
			op.Kind, op.Key = history.UserAdd, fmt.Sprintf("%064x", i%50)
		case p == "conn-1":
			op.Kind, op.Key, op.Value = history.Connect, fmt.Sprintf("%064x", i%7), "registered"
		default:
			op.Kind, op.Key = history.Request, "POST /v1/users"
		}
		if down(node, at) {
			if rng.IntN(2) == 0 {
				op.Outcome, op.Error, op.EndMS = history.Failed, "connection refused", at+3
			} else {
				op.Outcome, op.Error, op.EndMS = history.Unknown, "timeout", at+2000
			}
		}
		id := add(op)
		if op.Kind == history.Publish && op.Outcome == history.OK {
			if at > durMS*3/4 && lost == 0 {
				lost = id // acked, never received
				continue
			}
			end := op.EndMS + 3 + rng.Int64N(20)
			if end >= gapFrom && end < gapTo {
				end = gapTo + rng.Int64N(300)
			}
			add(history.Op{Process: p, Node: node, Kind: history.Receive, Key: op.Key, Value: op.Value, Seq: uint64(id), InvokeMS: end - 1, EndMS: end, Outcome: history.OK})
		}
	}
	rep := &validate.Report{
		Verdict: validate.Red,
		Results: []validate.Result{
			{Name: "validity", OK: true, Valid: true, Counts: map[string]int{"ops": len(ops)}},
			{Name: "queue", Valid: true, Counts: map[string]int{"acked": 100, "lost": 1},
				Anomalies: []validate.Anomaly{{Kind: "lost", OpIDs: []int64{lost}, Detail: "acked publish never received (postfix)", Fails: true}}},
			{Name: "fail-closed", OK: true, Valid: true},
		},
		CutOff:  []validate.Interval{{Node: "n2", StartMS: faults[1].StartMS, EndMS: faults[1].HealStartMS, Why: "partition"}},
		Elapsed: 1234 * time.Millisecond,
	}
	return Page{Title: "nemesis seed 7", Seed: 7, Target: "process", Base: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Nodes: nodes, Ops: ops, Faults: faults, Validation: rep,
		Notes:     []string{"A replay reproduces the faults, their order and offsets (±1 s), not the scheduler's timing."},
		Links:     []Link{{Name: "history.jsonl", Href: "history.jsonl"}, {Name: "schedule.json", Href: "schedule.json"}, {Name: "porcupine.html", Href: "porcupine.html"}},
		Checklist: &Checklist{Target: "process", Claims: []Row{{Claim: "nemesis", Summary: "a seeded nemesis run finds no anomaly", State: "FAILED", Specs: 1, Reasons: []string{"1 lost write"}}}}}
}

func TestWritePage(t *testing.T) {
	dir := t.TempDir()
	p := synthRun(3000, 60_000)
	if err := WritePage(dir, p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, PageFile))
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	lost := p.Validation.Results[1].Anomalies[0].OpIDs[0]
	for _, want := range []string{
		`href="#op-` + fmt.Sprint(lost) + `"`, `id="op-` + fmt.Sprint(lost) + `"`, // anomaly links to its op's row
		`href="history.jsonl"`, `href="porcupine.html"`, "acked publish never received", "nemesis seed 7",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// No network: nothing is fetched from anywhere.
	if m := regexp.MustCompile(`(src|href)="(https?:)?//`).FindString(html); m != "" {
		t.Errorf("page references the network: %s", m)
	}
	// Only the implicated op and its neighbours, not the whole history.
	if rows := strings.Count(html, `<tr id="op-`); rows == 0 || rows > 2*neighbours+1 {
		t.Errorf("%d op rows, want 1..%d", rows, 2*neighbours+1)
	}
}

// TestWritePageEmpty: every field is optional.
func TestWritePageEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "history.jsonl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePage(dir, Page{Ops: []history.Op{{ID: 1, Kind: history.Publish, InvokeMS: 5, EndMS: 1<<62 - 1, Outcome: history.Unknown}}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, PageFile))
	if err != nil || !strings.Contains(string(b), `href="history.jsonl"`) {
		t.Errorf("page without links does not list the files beside it: %v", err)
	}
}

// TestWritePageLarge: a 60k-op history makes a page of bounded size.
func TestWritePageLarge(t *testing.T) {
	dir := t.TempDir()
	p := synthRun(60_000, 300_000)
	start := time.Now()
	if err := WritePage(dir, p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, PageFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ops: %d KiB in %s", len(p.Ops), fi.Size()>>10, time.Since(start).Round(time.Millisecond))
	if fi.Size() > 2<<20 {
		t.Errorf("page is %d KiB for %d ops: the lanes are not downsampled", fi.Size()>>10, len(p.Ops))
	}
	if testing.Short() {
		return
	}
	bin := chromium(t)
	dom := browse(t, bin, filepath.Join(dir, PageFile), "")
	checkDOM(t, dom, len(p.Faults))
	if m := regexp.MustCompile(`data-render-ms="(\d+)"`).FindStringSubmatch(dom); m != nil {
		t.Logf("drawn in %s ms (%d KiB of DOM)", m[1], len(dom)>>10)
	}
}

// chromium returns the headless browser, or skips the test saying how to
// get one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH: apt-get install -y chromium (.ci/run installs it) to check the report page in a real browser")
	return ""
}

// browse loads file in headless Chromium and returns the DOM after its
// scripts ran; with shot set, it also saves a screenshot there.
func browse(t *testing.T, bin, file, shot string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000", "--window-size=1400,1000"}
	if shot != "" {
		out, err := exec.CommandContext(ctx, bin, append(args, "--screenshot="+shot, "file://"+file)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chromium screenshot: %v\n%s", err, out)
		}
	}
	cmd := exec.CommandContext(ctx, bin, append(args, "--dump-dom", "file://"+file)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v\n%s", err, stderr.String())
	}
	return string(out)
}

var (
	bodyRe = regexp.MustCompile(`<body[^>]*>`)
	attrRe = regexp.MustCompile(`data-(rendered|errors)="([^"]*)"`)
)

// checkDOM asserts the page's script ran without an error and drew one
// fault band per fault.
func checkDOM(t *testing.T, dom string, faults int) {
	t.Helper()
	attrs := map[string]string{}
	for _, m := range attrRe.FindAllStringSubmatch(bodyRe.FindString(dom), -1) {
		attrs[m[1]] = m[2]
	}
	if attrs["rendered"] != "ok" || attrs["errors"] != "" {
		t.Fatalf("page did not render: data-rendered=%q data-errors=%q", attrs["rendered"], attrs["errors"])
	}
	if got := strings.Count(dom, `class="fault-band"`); got != faults {
		t.Errorf("%d fault bands in the DOM, want %d", got, faults)
	}
}

func TestPageInBrowser(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	p := synthRun(3000, 60_000)
	if err := WritePage(dir, p); err != nil {
		t.Fatal(err)
	}
	shot := os.Getenv("REPORT_PAGE_SHOT") // e.g. out/report/page.png, to look at it
	dom := browse(t, bin, filepath.Join(dir, PageFile), shot)
	checkDOM(t, dom, len(p.Faults))
	if !strings.Contains(dom, `class="timeline"`) || !strings.Contains(dom, `class="mark"`) {
		t.Error("timeline or anomaly mark missing from the DOM")
	}
	// A broken script must be caught: the check is not vacuous.
	b, _ := os.ReadFile(filepath.Join(dir, PageFile))
	broken := strings.Replace(string(b), `JSON.parse(`, `JSON.parsex(`, 1)
	bad := filepath.Join(dir, "broken.html")
	if err := os.WriteFile(bad, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := attrRe.FindAllStringSubmatch(bodyRe.FindString(browse(t, bin, bad, "")), -1); len(m) < 2 || m[0][2] == "ok" {
		t.Errorf("a page whose script throws reads as rendered: %v", m)
	}
}

func TestSpecsPageInBrowser(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Minute)
	spec := "Failover a node is killed"
	var tls []chaos.Timeline
	for _, n := range []string{"n1", "n2", "n3"} {
		tl := chaos.Timeline{Node: n}
		for i := range 200 {
			code := 200
			if n == "n1" && i >= 50 && i < 120 {
				code = 0
			}
			tl.Probes = append(tl.Probes, chaos.Probe{At: base.Add(time.Duration(i) * 100 * time.Millisecond), Code: code})
		}
		tls = append(tls, tl)
	}
	if _, err := Evidence(dir, spec, "healthz-timelines", tls); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"base": base, "injections": []fault.Evidence{{Fault: "kill", Nodes: []string{"n1"},
		Start: base.Add(5 * time.Second), Injected: base.Add(5200 * time.Millisecond), HealStart: base.Add(12 * time.Second), End: base.Add(14 * time.Second)}}})
	if _, err := Evidence(dir, spec, "faults", json.RawMessage(b)); err != nil {
		t.Fatal(err)
	}
	var conns []map[string]any
	for i := range 40 {
		at := base.Add(time.Duration(i) * 500 * time.Millisecond)
		conns = append(conns, map[string]any{"start": at, "end": at.Add(20 * time.Millisecond), "refused": i >= 10 && i < 24, "detail": "x"})
	}
	if _, err := Evidence(dir, spec, "connection-attempts", conns); err != nil {
		t.Fatal(err)
	}
	r := types.Report{StartTime: base, SpecReports: types.SpecReports{
		{LeafNodeType: types.NodeTypeIt, ContainerHierarchyTexts: []string{"Failover"}, LeafNodeText: "a node is killed", LeafNodeLabels: []string{"claim:failover", "disruptive"}, State: types.SpecStatePassed},
		{LeafNodeType: types.NodeTypeIt, ContainerHierarchyTexts: []string{"Bringup"}, LeafNodeText: "starts", State: types.SpecStatePassed},
	}}
	if err := WriteSpecsPage(dir, r, Checklist{Target: "inproc"}); err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(filepath.Join(dir, PageFile))
	if !strings.Contains(string(html), spec) || strings.Contains(string(html), "Bringup starts") {
		t.Errorf("specs page: want a section for the disruptive spec only")
	}
	if !strings.Contains(string(html), `\u0022name\u0022:\u0022connection-attempts\u0022`) && !strings.Contains(string(html), `"name":"connection-attempts"`) {
		t.Errorf("specs page: the connection attempts are not drawn as a lane")
	}
	bin := chromium(t)
	dom := browse(t, bin, filepath.Join(dir, PageFile), os.Getenv("REPORT_SPECS_SHOT"))
	checkDOM(t, dom, 1)
}
