package report

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
)

// BenchRow is one line of `make bench`'s table. A nil value is JSON null:
// no counterpart on the plain cluster, or not measured in this run.
type BenchRow struct {
	Name        string   `json:"name"`
	Unit        string   `json:"unit"`
	Membershipd *float64 `json:"membershipd"`
	Plain       *float64 `json:"plain"`
	Ratio       *float64 `json:"ratio"`
}

// BenchTable is the whole table, with notes on how each row was measured
// and on anything that went wrong while measuring.
type BenchTable struct {
	Rows  []BenchRow `json:"rows"`
	Notes []string   `json:"notes,omitempty"`
}

// BenchFile is bench.json's name in the bench output directory.
const BenchFile = "bench.json"

// WriteBench writes dir/bench.json and each extra file (e.g. SVG charts)
// into dir, creating dir.
func WriteBench(dir string, t BenchTable, extra map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench report dir: %w", err)
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode bench table: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, BenchFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write bench table: %w", err)
	}
	for name, data := range extra {
		if filepath.Base(name) != name {
			return fmt.Errorf("bench file %q: want a plain file name", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// CreateBenchFile creates dir/name for a report that is streamed while the
// benchmark runs (a CPU profile).
func CreateBenchFile(dir, name string) (*os.File, error) {
	if filepath.Base(name) != name {
		return nil, fmt.Errorf("bench file %q: want a plain file name", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench report dir: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return f, nil
}

// WriteBenchText prints the table for a terminal, then the notes.
func WriteBenchText(w io.Writer, t BenchTable) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "row\tunit\tmembershipd\tplain\tratio\t")
	for _, r := range t.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Name, r.Unit, num(r.Membershipd), num(r.Plain), num(r.Ratio))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range t.Notes {
		if _, err := fmt.Fprintf(w, "note: %s\n", n); err != nil {
			return err
		}
	}
	return nil
}

func num(v *float64) string {
	if v == nil {
		return "null"
	}
	switch a := math.Abs(*v); {
	case a >= 100:
		return strconv.FormatFloat(*v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(*v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(*v, 'f', 2, 64)
	}
}
