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
	v := pageView{Title: "Runbook specs on target " + c.Target, Target: c.Target, Checklist: &c}
	if !r.StartTime.IsZero() {
		v.Base = r.StartTime.UTC().Format(time.RFC3339)
	}
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt || !slices.Contains(s.Labels(), "disruptive") {
			continue
		}
		id := fmt.Sprintf("s%d", len(v.Specs)+1)
		name := strings.Trim(unsafeChars.ReplaceAllString(s.FullText(), "_"), "_")
		tls, faults, base, files := readSpecEvidence(filepath.Join(dir, "evidence", name), "evidence/"+name)
		sv := specView{ID: id, Title: s.FullText(), State: s.State.String(), Files: files, Empty: len(tls) == 0 && len(faults) == 0}
		v.Specs = append(v.Specs, sv)
		if !sv.Empty {
			sec := buildSection(id, sv.Title, sv.State, base, nil, nil, faults, tls, nil)
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
func readSpecEvidence(d, href string) ([]chaos.Timeline, []fault.Evidence, time.Time, []Link) {
	ents, err := os.ReadDir(d)
	if err != nil {
		return nil, nil, time.Time{}, nil
	}
	var tls []chaos.Timeline
	var faults []fault.Evidence
	var files []Link
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
	return tls, faults, base, files
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
