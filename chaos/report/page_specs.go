package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/onsi/ginkgo/v2/types"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
)

// specView is one disruptive spec's section of the specs page.
type specView struct {
	ID, Title, State string
	Files            []Link
	Empty            bool
}

// WriteSpecsPage writes dir/report.html for a spec suite run: the claims
// checklist, then one timeline per disruptive spec drawn from the
// evidence the spec recorded under dir/evidence/<spec>/ (health timelines
// from a chaos.Watcher, fault evidence from a fault.Recorder).
func WriteSpecsPage(dir string, r types.Report, c Checklist) error {
	// The page is for the specs that ran; checklist.txt lists every row.
	shown, skipped := c, 0
	shown.Claims = nil
	for _, row := range c.Claims {
		if row.State == "skipped" {
			skipped++
			continue
		}
		shown.Claims = append(shown.Claims, row)
	}
	v := pageView{Title: "Runbook specs on target " + c.Target, Target: c.Target, Checklist: &shown, Links: []Link{{Name: "checklist.txt", Href: "checklist.txt"}}}
	if skipped > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d skipped claims are left out here; checklist.txt lists them with the reasons.", skipped))
	}
	if !r.StartTime.IsZero() {
		v.Base = r.StartTime.UTC().Format(time.RFC3339)
	}
	for _, s := range r.SpecReports {
		// Skipped specs drew nothing: listing them would bury the ones that ran.
		if s.LeafNodeType != types.NodeTypeIt || !slices.Contains(s.Labels(), "disruptive") || s.State.Is(types.SpecStateSkipped|types.SpecStatePending) {
			continue
		}
		id := fmt.Sprintf("s%d", len(v.Specs)+1)
		name := strings.Trim(unsafeChars.ReplaceAllString(s.FullText(), "_"), "_")
		ev := readSpecEvidence(filepath.Join(dir, "evidence", name), "evidence/"+name)
		sv := specView{ID: id, Title: s.FullText(), State: s.State.String(), Files: ev.files, Empty: len(ev.timelines)+len(ev.faults)+len(ev.attempts) == 0}
		v.Specs = append(v.Specs, sv)
		if !sv.Empty {
			sec := buildSection(id, sv.Title, sv.State, ev.base, nil, ev.attempts, ev.faults, ev.timelines, nil)
			// A spec's few attempts make no useful rate or latency chart.
			sec.Rate, sec.Lat, sec.Deliv = nil, nil, nil
			v.Model.Sections = append(v.Model.Sections, sec)
		}
	}
	if len(v.Specs) == 0 {
		v.Notes = append(v.Notes, "No disruptive spec ran in this suite run, so there is no timeline.")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir %s: %w", dir, err)
	}
	return renderPage(filepath.Join(dir, PageFile), v)
}

// specEvidence is what a spec recorded that the page can draw. Attempts
// (check.Attempt lists) become op lanes named after their file: refused
// is drawn as failed.
type specEvidence struct {
	timelines []chaos.Timeline
	faults    []fault.Evidence
	attempts  []history.Op
	base      time.Time
	files     []Link
}

// attemptJSON is a check.Attempt.
type attemptJSON struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Refused bool      `json:"refused"`
	Detail  string    `json:"detail"`
}

// probeJSON is the part of a chaos.Probe the page draws (its error does
// not read back from JSON).
type probeJSON struct {
	At   time.Time
	Code int
}

type timelineJSON struct {
	Node   string      `json:"node"`
	Probes []probeJSON `json:"probes"`
}

// readSpecEvidence reads every JSON file in d and keeps what is a health
// timeline list or fault evidence; offsets are recomputed from one base,
// the earliest time seen, since each recorder counted from its own.
func readSpecEvidence(d, href string) specEvidence {
	ents, err := os.ReadDir(d)
	if err != nil {
		return specEvidence{}
	}
	var tls []chaos.Timeline
	var faults []fault.Evidence
	var files []Link
	attempts := map[string][]attemptJSON{} // file name -> attempts
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		files = append(files, Link{Name: e.Name(), Href: href + "/" + e.Name()})
		b, err := os.ReadFile(filepath.Join(d, e.Name()))
		if err != nil {
			continue
		}
		if lines, ok := parseTimelines(b); ok {
			for _, l := range lines {
				tl := chaos.Timeline{Node: l.Node}
				for _, p := range l.Probes {
					tl.Probes = append(tl.Probes, chaos.Probe{At: p.At, Code: p.Code})
				}
				tls = append(tls, tl)
			}
			continue
		}
		var rec struct {
			Injections []fault.Evidence `json:"injections"`
		}
		if json.Unmarshal(b, &rec) == nil && len(rec.Injections) > 0 {
			faults = append(faults, rec.Injections...)
			continue
		}
		var as []attemptJSON
		if json.Unmarshal(b, &as) == nil && len(as) > 0 && !as[0].Start.IsZero() {
			attempts[strings.TrimSuffix(e.Name(), ".json")] = as
			continue
		}
		var list []fault.Evidence
		if json.Unmarshal(b, &list) == nil && len(list) > 0 && list[0].Fault != "" {
			faults = append(faults, list...)
		}
	}
	var base time.Time
	early := func(t time.Time) {
		if !t.IsZero() && (base.IsZero() || t.Before(base)) {
			base = t
		}
	}
	for _, tl := range tls {
		for _, p := range tl.Probes {
			early(p.At)
		}
	}
	for _, f := range faults {
		early(f.Start)
	}
	for _, as := range attempts {
		for _, a := range as {
			early(a.Start)
		}
	}
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return t.Sub(base).Milliseconds()
	}
	for i := range faults {
		f := &faults[i]
		f.StartMS, f.InjectedMS, f.HealStartMS, f.EndMS = ms(f.Start), ms(f.Injected), ms(f.HealStart), ms(f.End)
	}
	var ops []history.Op
	for name, as := range attempts {
		for _, a := range as {
			op := history.Op{ID: int64(len(ops) + 1), Process: name, InvokeMS: ms(a.Start), EndMS: ms(a.End), Outcome: history.OK, Error: a.Detail}
			if a.Refused {
				op.Outcome = history.Failed
			}
			ops = append(ops, op)
		}
	}
	return specEvidence{tls, faults, ops, base, files}
}

// parseTimelines reads a list of chaos.Timeline, or one.
func parseTimelines(b []byte) ([]timelineJSON, bool) {
	var lines []timelineJSON
	if json.Unmarshal(b, &lines) == nil && len(lines) > 0 && lines[0].Node != "" && lines[0].Probes != nil {
		return lines, true
	}
	var one timelineJSON
	if json.Unmarshal(b, &one) == nil && one.Node != "" && one.Probes != nil {
		return []timelineJSON{one}, true
	}
	return nil, false
}
