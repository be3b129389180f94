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
	State    string        `json:"state"` // passed, FAILED, skipped, no spec
	Specs    int           `json:"specs"`
	Duration time.Duration `json:"duration_ns"`
}

// Checklist folds a Ginkgo report into one row per claim that applies to
// target ("inproc" or "ssh"). Claims without a spec are listed too, so a
// gap is visible rather than silently absent.
func Checklist(r types.Report, target string) []Row {
	var rows []Row
	for _, c := range claims.All {
		if (target == "ssh" && !c.SSH) || (target != "ssh" && !c.InProc) {
			continue
		}
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
			default:
				skipped++
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
		}
		rows = append(rows, row)
	}
	return rows
}

func hasClaim(labels []string, id string) bool {
	for _, got := range claims.FromLabels(labels) {
		if got == id {
			return true
		}
	}
	return false
}

// WriteChecklist prints the rows as a table.
func WriteChecklist(w io.Writer, target string, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Runbook claims on target %s\n", target)
	fmt.Fprintln(tw, "CLAIM\tRESULT\tSPECS\tTIME\tWHAT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Claim, r.State, r.Specs, r.Duration.Round(100*time.Millisecond), r.Summary)
	}
	return tw.Flush()
}

// WriteChecklistFiles writes checklist.txt and checklist.json into dir.
func WriteChecklistFiles(dir, target string, rows []Row, ms []Measurement) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir %s: %w", dir, err)
	}
	var b strings.Builder
	if err := WriteChecklist(&b, target, rows); err != nil {
		return err
	}
	if err := WriteMeasurements(&b, ms); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "checklist.txt"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write checklist: %w", err)
	}
	return writeJSON(filepath.Join(dir, "checklist.json"), struct {
		Target       string        `json:"target"`
		Claims       []Row         `json:"claims"`
		Measurements []Measurement `json:"measurements"`
	}{target, rows, ms})
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
