// Package report is the only code that writes report files: the claim
// checklist and per-spec evidence (health timelines, CLI output).
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/unibus/clusterkit/chaos/claims"
)

// Row is one claim's line in the checklist.
type Row struct {
	Claim    string        `json:"claim"`
	Summary  string        `json:"summary"`
	State    string        `json:"state"` // passed, partial, FAILED, skipped, not run, no spec
	Specs    int           `json:"specs"`
	Duration time.Duration `json:"duration_ns"`
	// Reasons says why specs were skipped, failed or not run, one line
	// each, without repeats: the checklist alone should explain a row.
	Reasons []string `json:"reasons,omitempty"`
}

// SuiteProblem is a suite-level node (BeforeSuite, AfterSuite, their
// cleanups) that did not pass, or a reason Ginkgo gave for the whole suite
// (interrupt, timeout). A failed BeforeSuite means no spec ran at all.
type SuiteProblem struct {
	Node     string `json:"node"` // e.g. BeforeSuite, AfterSuite, suite
	State    string `json:"state"`
	Message  string `json:"message"` // the first lines of the failure
	Location string `json:"location,omitempty"`
}

// Checklist is one run's claim checklist.
type Checklist struct {
	Target string         `json:"target"`
	Suite  []SuiteProblem `json:"suite_problems,omitempty"`
	// SetupFailed is set when BeforeSuite did not pass: then no claim ran.
	SetupFailed bool  `json:"setup_failed"`
	Claims      []Row `json:"claims"`
}

const (
	maxReasonLen    = 200 // one skip or failure reason, on one line
	maxMessageLines = 5   // of a suite node's failure message
)

// setupNodes and teardownNodes are the suite-level nodes whose failure
// the checklist names.
const (
	setupNodes    = types.NodeTypeBeforeSuite | types.NodeTypeSynchronizedBeforeSuite
	teardownNodes = types.NodeTypeAfterSuite | types.NodeTypeSynchronizedAfterSuite | types.NodeTypeCleanupAfterSuite
)

// NewChecklist folds a Ginkgo report into one row per claim that applies
// to target ("inproc" or "ssh"). Claims without a spec are listed too, so
// a gap is visible rather than silently absent. When the suite setup
// failed no spec ran, and every row says so instead of "no spec".
func NewChecklist(r types.Report, target string) Checklist {
	c := Checklist{Target: target}
	setup := "" // e.g. "BeforeSuite failed", when setup did not pass
	for _, s := range r.SpecReports {
		if !s.LeafNodeType.Is(setupNodes|teardownNodes) || s.State.Is(types.SpecStatePassed) {
			continue
		}
		if s.LeafNodeType.Is(setupNodes) {
			c.SetupFailed = true
			setup = s.LeafNodeType.String() + " " + s.State.String()
		}
		c.Suite = append(c.Suite, SuiteProblem{
			Node:     s.LeafNodeType.String(),
			State:    s.State.String(),
			Message:  firstLines(failureText(s.Failure), maxMessageLines),
			Location: location(s.Failure.Location),
		})
	}
	for _, reason := range r.SpecialSuiteFailureReasons {
		c.Suite = append(c.Suite, SuiteProblem{Node: "suite", State: "failed", Message: firstLines(reason, maxMessageLines)})
	}
	for _, cl := range claims.All {
		if !cl.On(target) {
			continue
		}
		c.Claims = append(c.Claims, claimRow(r, cl, setup))
	}
	return c
}

func claimRow(r types.Report, c claims.Claim, setup string) Row {
	row := Row{Claim: c.ID, Summary: c.Summary, State: "no spec"}
	passed, failed, skipped := 0, 0, 0
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt || !hasClaim(s.Labels(), c.ID) {
			continue
		}
		row.Specs++
		row.Duration += s.RunTime
		switch {
		case s.State == types.SpecStatePassed:
			passed++
		case s.State.Is(types.SpecStateFailureStates):
			failed++
			row.addReason(s.State.String() + ": " + oneLine(failureText(s.Failure)))
		default:
			skipped++
			row.addReason(s.State.String() + ": " + skipReason(r, s))
		}
	}
	switch {
	case failed > 0:
		row.State = "FAILED"
	case passed > 0 && skipped == 0:
		row.State = "passed"
	case passed > 0:
		row.State = "partial"
	case skipped > 0:
		row.State = "skipped"
	case setup != "":
		// Ginkgo reports no spec at all when BeforeSuite fails, so "no
		// spec" here would blame the catalog for a setup failure.
		row.State = "not run"
		row.addReason("not run: the suite setup (" + setup + ")")
	}
	return row
}

func (r *Row) addReason(s string) {
	if !slices.Contains(r.Reasons, s) {
		r.Reasons = append(r.Reasons, s)
	}
}

// skipReason is the Skip() message, or, for a spec Ginkgo skipped without
// one, which of the run's filters left it out.
func skipReason(r types.Report, s types.SpecReport) string {
	if m := oneLine(s.Failure.Message); m != "" {
		return m
	}
	if s.State == types.SpecStatePending {
		return "marked pending"
	}
	cfg := r.SuiteConfig
	if cfg.LabelFilter != "" {
		if match, err := types.ParseLabelFilter(cfg.LabelFilter); err == nil && !match(s.Labels()) {
			return "not selected by --label-filter=" + cfg.LabelFilter
		}
	}
	if len(cfg.FocusStrings)+len(cfg.SkipStrings)+len(cfg.FocusFiles)+len(cfg.SkipFiles) > 0 || cfg.SemVerFilter != "" {
		return "not selected by --focus/--skip/--sem-ver-filter"
	}
	if len(r.SpecialSuiteFailureReasons) > 0 {
		return "not run: " + oneLine(strings.Join(r.SpecialSuiteFailureReasons, "; "))
	}
	return "no reason recorded"
}

func failureText(f types.Failure) string {
	if f.ForwardedPanic != "" {
		return "panic: " + f.ForwardedPanic
	}
	return f.Message
}

func location(l types.CodeLocation) string {
	if l.FileName == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", filepath.Base(l.FileName), l.LineNumber)
}

// firstLines keeps the first n lines of s that say something, trimmed.
func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		// Gomega's dumps put lone braces on lines of their own.
		if l = strings.TrimSpace(l); strings.Trim(l, "{}[](),") != "" {
			out = append(out, l)
		}
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, "\n")
}

// oneLine joins the first lines of s into one line of bounded length.
func oneLine(s string) string {
	l := strings.ReplaceAll(firstLines(s, 3), "\n", " ")
	if r := []rune(l); len(r) > maxReasonLen {
		l = string(r[:maxReasonLen-1]) + "…"
	}
	return l
}

func hasClaim(labels []string, id string) bool {
	return slices.Contains(claims.FromLabels(labels), id)
}

// WriteChecklist prints the checklist as a table, each row's reasons on
// lines of their own under it, after any suite-level failure.
func WriteChecklist(w io.Writer, c Checklist) error {
	fmt.Fprintf(w, "Runbook claims on target %s\n", c.Target)
	if c.SetupFailed {
		fmt.Fprintln(w, "SUITE SETUP FAILED: no claim ran")
	}
	for _, p := range c.Suite {
		head := p.Node + " " + p.State
		if p.Location != "" {
			head += " at " + p.Location
		}
		fmt.Fprintf(w, "  %s:\n", head)
		for _, l := range strings.Split(p.Message, "\n") {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLAIM\tRESULT\tSPECS\tTIME\tWHAT")
	for _, r := range c.Claims {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Claim, r.State, r.Specs, r.Duration.Round(100*time.Millisecond), r.Summary)
		for _, why := range r.Reasons {
			// Empty leading cells keep the reason under WHAT without
			// breaking the table's column block.
			fmt.Fprintf(tw, "\t\t\t\t↳ %s\n", why)
		}
	}
	return tw.Flush()
}

// WriteChecklistFiles writes checklist.txt and checklist.json into dir.
func WriteChecklistFiles(dir string, c Checklist, ms []Measurement) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir %s: %w", dir, err)
	}
	var b strings.Builder
	if err := WriteChecklist(&b, c); err != nil {
		return err
	}
	if err := WriteMeasurements(&b, ms); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "checklist.txt"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write checklist: %w", err)
	}
	return writeJSON(filepath.Join(dir, "checklist.json"), struct {
		Checklist
		Measurements []Measurement `json:"measurements"`
	}{c, ms})
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Evidence writes v as JSON to dir/evidence/<spec>/<name>.json and returns
// the path. Specs attach timelines and CLI output this way, so a failure
// can be examined (and re-checked) after the run.
func Evidence(dir, spec, name string, v any) (string, error) {
	d := filepath.Join(dir, "evidence", strings.Trim(unsafeChars.ReplaceAllString(spec, "_"), "_"))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("create evidence dir %s: %w", d, err)
	}
	p := filepath.Join(d, unsafeChars.ReplaceAllString(name, "_")+".json")
	return p, writeJSON(p, v)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// Measurement is a number a spec recorded with AddReportEntry.
type Measurement struct {
	Spec  string `json:"spec"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Measurements collects every report entry of every spec, in run order.
func Measurements(r types.Report) []Measurement {
	var out []Measurement
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt {
			continue
		}
		for _, e := range s.ReportEntries {
			out = append(out, Measurement{Spec: s.LeafNodeText, Name: e.Name, Value: e.StringRepresentation()})
		}
	}
	return out
}

// WriteMeasurements prints measurements as "name: value".
func WriteMeasurements(w io.Writer, ms []Measurement) error {
	if len(ms) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nMeasured in this run")
	for _, m := range ms {
		fmt.Fprintf(tw, "  %s\t%s\n", m.Name, m.Value)
	}
	return tw.Flush()
}
