package report

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/chaos/validate"
)

// Page is everything one nemesis run's report.html shows. Every field is
// optional: the page draws what it is given. Times in Ops, Faults and
// Validation.CutOff are milliseconds from Base (one clock for the run).
type Page struct {
	Title  string
	Seed   int64
	Target string
	// Base is the wall-clock time the run's offsets count from.
	Base time.Time
	// Nodes of the cluster, in lane order (others found in the data follow).
	Nodes []string
	// Notes are lines shown under the title (what a replay reproduces...).
	Notes []string
	// Checklist: the claims checklist, when the run has one.
	Checklist *Checklist
	// Validation: the checkers' judgement; its Results are the run's
	// checklist, its anomalies the list linked into the history.
	Validation *validate.Report
	Ops        []history.Op
	Faults     []fault.Evidence
	// Timelines: /healthz timelines recorded by a chaos.Watcher, drawn as
	// node health lanes besides the history's health ops.
	Timelines []chaos.Timeline
	// Links: files beside report.html (relative hrefs). Nil: every file in
	// the report directory is listed.
	Links []Link
}

// Link is a file the page links to, relative to report.html.
type Link struct {
	Name string `json:"name"`
	Href string `json:"href"`
}

// PageFile is the report page's file name.
const PageFile = "report.html"

// Limits that keep a page small and fast whatever the history's size.
const (
	opBuckets     = 1200 // time buckets per process lane
	maxLanes      = 48   // process lanes; the rest share one lane
	maxGaps       = 3    // failover gaps highlighted
	minGapMS      = 1000 // a gap shorter than this is not a failover
	maxTableIDs   = 400  // implicated ops rendered in the table
	neighbours    = 3    // ops either side of an implicated op, same process
	maxMarks      = 300  // anomaly marks on the timeline
	maxPerKind    = 100  // anomalies listed per checker and kind
	maxIDsPerLine = 12   // op links per anomaly line
	healthGapMS   = 5000 // no probe for this long: the lane shows no data
	maxOpMS       = 10 * 60 * 1000
	maxSeconds    = 24 * 3600 // per-second buckets of the charts
)

// WritePage writes dir/report.html for one nemesis run.
func WritePage(dir string, p Page) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create report dir %s: %w", dir, err)
	}
	if p.Links == nil {
		p.Links = listFiles(dir)
	}
	v := pageView{Title: p.Title, Seed: p.Seed, Target: p.Target, Notes: p.Notes, Links: p.Links, Checklist: p.Checklist}
	if v.Title == "" {
		v.Title = "nemesis run"
	}
	if !p.Base.IsZero() {
		v.Base = p.Base.UTC().Format(time.RFC3339)
	}
	if p.Validation != nil {
		v.Verdict = string(p.Validation.Verdict)
		v.Elapsed = p.Validation.Elapsed.Round(time.Millisecond).String()
		v.Results, v.Anomalies, v.AnomalyCount = resultRows(p.Validation.Results, p.Ops)
	}
	v.Ops = opTable(p.Ops, p.Validation)
	sec := buildSection("run", "", "", p.Base, p.Nodes, p.Ops, p.Faults, p.Timelines, p.Validation)
	v.Model = model{Sections: []section{sec}}
	return renderPage(filepath.Join(dir, PageFile), v)
}

// listFiles is every file in dir (and one level down) but the page itself.
func listFiles(dir string) []Link {
	var out []Link
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() == PageFile || e.Name()[0] == '.' {
			continue
		}
		if !e.IsDir() {
			out = append(out, Link{Name: e.Name(), Href: e.Name()})
			continue
		}
		sub, _ := os.ReadDir(filepath.Join(dir, e.Name()))
		for _, s := range sub {
			if !s.IsDir() {
				n := e.Name() + "/" + s.Name()
				out = append(out, Link{Name: n, Href: n})
			}
		}
	}
	return out
}

//go:embed page.tmpl
var pageTmpl string

//go:embed page.js
var pageJS string

//go:embed page.css
var pageCSS string

var tmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"js":  func() template.JS { return template.JS(pageJS) },
	"css": func() template.CSS { return template.CSS(pageCSS) },
	"dur": func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() },
}).Parse(pageTmpl))

func renderPage(path string, v pageView) error {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, v); err != nil {
		return fmt.Errorf("render %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// pageView is what the template renders; Model is the data the page's
// script draws the timelines from.
type pageView struct {
	Title, Target, Base, Verdict, Elapsed string
	Seed                                  int64
	Notes                                 []string
	Links                                 []Link
	Checklist                             *Checklist
	Results                               []resultRow
	Anomalies                             []anomalyGroup
	AnomalyCount                          int
	Ops                                   []opRow
	Specs                                 []specView // the specs page
	Model                                 model
}

type resultRow struct {
	Name, Status, Counts string
	Reasons              []string
	Anomalies            int
}

type anomalyGroup struct {
	Checker, Kind string
	Fails         bool
	Count         int
	Items         []anomalyItem
	More          int
}

type anomalyItem struct {
	Detail string
	IDs    []int64
	More   int
}

type opRow struct {
	history.Op
	Implicated bool
	Latency    int64
	Gap        bool // rows were skipped before this one
}

func resultRows(rs []validate.Result, ops []history.Op) ([]resultRow, []anomalyGroup, int) {
	var rows []resultRow
	var groups []anomalyGroup
	total := 0
	for _, r := range rs {
		row := resultRow{Name: r.Name, Status: r.Status(), Reasons: r.Reasons, Anomalies: len(r.Anomalies)}
		keys := make([]string, 0, len(r.Counts))
		for k := range r.Counts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				row.Counts += " "
			}
			row.Counts += k + "=" + strconv.Itoa(r.Counts[k])
		}
		rows = append(rows, row)
		idx := map[string]int{}
		for _, a := range r.Anomalies {
			total++
			k := fmt.Sprintf("%s/%v", a.Kind, a.Fails)
			i, ok := idx[k]
			if !ok {
				i = len(groups)
				idx[k] = i
				groups = append(groups, anomalyGroup{Checker: r.Name, Kind: a.Kind, Fails: a.Fails})
			}
			g := &groups[i]
			g.Count++
			if len(g.Items) == maxPerKind {
				g.More++
				continue
			}
			it := anomalyItem{Detail: a.Detail, IDs: a.OpIDs}
			if len(it.IDs) > maxIDsPerLine {
				it.More = len(it.IDs) - maxIDsPerLine
				it.IDs = it.IDs[:maxIDsPerLine]
			}
			g.Items = append(g.Items, it)
		}
	}
	// Failing anomalies first: they are why a run is red.
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].Fails && !groups[j].Fails })
	return rows, groups, total
}

// implicated is the set of op ids the anomalies name, capped.
func implicated(rep *validate.Report) map[int64]bool {
	ids := map[int64]bool{}
	if rep == nil {
		return ids
	}
	for _, r := range rep.Results {
		for _, a := range r.Anomalies {
			for _, id := range a.OpIDs {
				if len(ids) == maxTableIDs {
					return ids
				}
				ids[id] = true
			}
		}
	}
	return ids
}

// opTable is the implicated ops and their neighbours in the same process,
// in process then invoke order: enough context, not the whole history.
func opTable(ops []history.Op, rep *validate.Report) []opRow {
	imp := implicated(rep)
	if len(imp) == 0 {
		return nil
	}
	byProc := map[string][]int{}
	for i, op := range ops {
		byProc[op.Process] = append(byProc[op.Process], i)
	}
	keep := map[int]bool{}
	for _, idxs := range byProc {
		sort.SliceStable(idxs, func(a, b int) bool { return ops[idxs[a]].InvokeMS < ops[idxs[b]].InvokeMS })
		for j, i := range idxs {
			if !imp[ops[i].ID] {
				continue
			}
			for k := max(0, j-neighbours); k <= min(len(idxs)-1, j+neighbours); k++ {
				keep[idxs[k]] = true
			}
		}
	}
	procs := make([]string, 0, len(byProc))
	for p := range byProc {
		procs = append(procs, p)
	}
	slices.Sort(procs)
	var rows []opRow
	for _, p := range procs {
		prev := -2
		for j, i := range byProc[p] {
			if !keep[i] {
				continue
			}
			op := ops[i]
			rows = append(rows, opRow{Op: op, Implicated: imp[op.ID], Latency: op.EndMS - op.InvokeMS, Gap: prev >= 0 && j != prev+1})
			prev = j
		}
	}
	return rows
}

// model is the JSON the page's script draws.
type model struct {
	Sections []section `json:"sections"`
}

// section is one timeline: the run's, or one disruptive spec's.
type section struct {
	ID     string     `json:"id"`
	Title  string     `json:"title"`
	State  string     `json:"state,omitempty"`
	T0     int64      `json:"t0"`
	T1     int64      `json:"t1"`
	Faults []band     `json:"faults"`
	CutOff []span     `json:"cutoff"`
	Health []lane     `json:"health"`
	Lanes  []opLane   `json:"lanes"`
	Bucket float64    `json:"bucket"` // ms per op bucket
	Gaps   []span     `json:"gaps"`
	Marks  []mark     `json:"marks"`
	Rate   [][3]int   `json:"rate"`    // per second: ok, failed, unknown
	Lat    [][3]int64 `json:"lat"`     // per second: publish ack p50, p99, max (-1: none)
	Deliv  [][2]int64 `json:"deliver"` // per second: publish→receive p50, p99
}

type band struct {
	Fault    string   `json:"fault"`
	Nodes    []string `json:"nodes"`
	Start    int64    `json:"start"`
	Injected int64    `json:"injected"`
	Heal     int64    `json:"heal"`
	End      int64    `json:"end"`
	Error    string   `json:"error,omitempty"`
}

type span struct {
	Lane string `json:"lane,omitempty"`
	From int64  `json:"from"`
	To   int64  `json:"to"`
	Why  string `json:"why,omitempty"`
}

// lane is a node's health: runs of one status code (0: no answer).
type lane struct {
	Name string     `json:"name"`
	Segs [][3]int64 `json:"segs"` // from, to, code
}

// opLane is a process's operations: runs of buckets per fate, each
// [first bucket, count], so a lane is three SVG paths whatever its size.
type opLane struct {
	Name    string     `json:"name"`
	OK      [][2]int32 `json:"ok"`
	Failed  [][2]int32 `json:"failed"`
	Unknown [][2]int32 `json:"unknown"`
	Counts  [3]int     `json:"counts"`
}

type mark struct {
	ID   int64  `json:"id"`
	Lane string `json:"lane"`
	At   int64  `json:"at"`
	Kind string `json:"kind"`
}

func buildSection(id, title, state string, base time.Time, nodes []string, ops []history.Op, faults []fault.Evidence, tls []chaos.Timeline, rep *validate.Report) section {
	s := section{ID: id, Title: title, State: state, T0: math.MaxInt64, T1: math.MinInt64}
	extend := func(ms ...int64) {
		for _, m := range ms {
			if m != -1 { // -1: the step never happened
				s.T0, s.T1 = min(s.T0, m), max(s.T1, m)
			}
		}
	}
	for _, op := range ops {
		// An end far past the invoke (a recorder's "never") must not
		// stretch the run to years.
		extend(op.InvokeMS, min(op.EndMS, op.InvokeMS+maxOpMS))
	}
	for _, f := range faults {
		extend(f.StartMS, f.InjectedMS, f.HealStartMS, f.EndMS)
	}
	health := map[string][][2]int64{} // node -> (ms, code)
	for _, op := range ops {
		if op.Kind != history.Health {
			continue
		}
		code, _ := strconv.Atoi(op.Value)
		health[op.Node] = append(health[op.Node], [2]int64{op.EndMS, int64(code)})
	}
	for _, tl := range tls {
		for _, p := range tl.Probes {
			ms := p.At.Sub(base).Milliseconds()
			health[tl.Node] = append(health[tl.Node], [2]int64{ms, int64(p.Code)})
			extend(ms)
		}
	}
	if s.T0 > s.T1 {
		s.T0, s.T1 = 0, 1000
	}
	if s.T0 > 0 {
		s.T0 = 0 // the run starts at its base
	}
	if s.T1 <= s.T0 {
		s.T1 = s.T0 + 1000
	}
	for _, f := range faults {
		s.Faults = append(s.Faults, band{Fault: f.Fault, Nodes: f.Nodes, Start: f.StartMS, Injected: f.InjectedMS, Heal: f.HealStartMS, End: f.EndMS, Error: f.Error})
	}
	if rep != nil {
		for _, c := range rep.CutOff {
			to := c.EndMS
			if to == math.MaxInt64 {
				to = s.T1
			}
			s.CutOff = append(s.CutOff, span{Lane: c.Node, From: c.StartMS, To: to, Why: c.Why})
		}
	}
	s.Health = healthLanes(nodes, health, faults)
	s.Lanes, s.Bucket = opLanes(ops, s.T0, s.T1)
	s.Gaps = failoverGaps(ops)
	s.Marks = anomalyMarks(ops, rep)
	s.Rate, s.Lat, s.Deliv = rates(ops, s.T0, s.T1)
	return s
}

func healthLanes(nodes []string, samples map[string][][2]int64, faults []fault.Evidence) []lane {
	order := slices.Clone(nodes)
	add := func(n string) {
		if n != "" && !slices.Contains(order, n) {
			order = append(order, n)
		}
	}
	var extra []string
	for n := range samples {
		extra = append(extra, n)
	}
	for _, f := range faults {
		extra = append(extra, f.Nodes...)
	}
	slices.Sort(extra)
	for _, n := range extra {
		add(n)
	}
	var out []lane
	for _, n := range order {
		ss := samples[n]
		slices.SortFunc(ss, func(a, b [2]int64) int { return int(a[0] - b[0]) })
		l := lane{Name: n, Segs: [][3]int64{}}
		for i, p := range ss {
			to := p[0] + 250 // the last probe shows briefly
			if i+1 < len(ss) {
				to = ss[i+1][0]
				if to-p[0] > healthGapMS {
					to = p[0] + 250
				}
			}
			if k := len(l.Segs) - 1; k >= 0 && l.Segs[k][2] == p[1] && l.Segs[k][1] == p[0] {
				l.Segs[k][1] = to
				continue
			}
			l.Segs = append(l.Segs, [3]int64{p[0], to, p[1]})
		}
		out = append(out, l)
	}
	return out
}

func opLanes(ops []history.Op, t0, t1 int64) ([]opLane, float64) {
	bucket := float64(t1-t0) / opBuckets
	type acc struct {
		fate   [3][]bool
		counts [3]int
	}
	lanes := map[string]*acc{}
	var names []string
	for _, op := range ops {
		if op.Kind == history.Health {
			continue
		}
		a := lanes[op.Process]
		if a == nil {
			a = &acc{}
			for i := range a.fate {
				a.fate[i] = make([]bool, opBuckets)
			}
			lanes[op.Process] = a
			names = append(names, op.Process)
		}
		f := fateIndex(op.Outcome)
		a.counts[f]++
		b0 := clampBucket(float64(op.InvokeMS-t0) / bucket)
		b1 := clampBucket(float64(op.EndMS-t0) / bucket)
		for b := b0; b <= b1; b++ {
			a.fate[f][b] = true
		}
	}
	slices.Sort(names)
	if len(names) > maxLanes {
		// Fold the surplus lanes into one, so the page stays readable.
		rest := &acc{}
		for i := range rest.fate {
			rest.fate[i] = make([]bool, opBuckets)
		}
		for _, n := range names[maxLanes-1:] {
			a := lanes[n]
			for f := range a.fate {
				rest.counts[f] += a.counts[f]
				for b, on := range a.fate[f] {
					rest.fate[f][b] = rest.fate[f][b] || on
				}
			}
		}
		name := fmt.Sprintf("%d others", len(names)-maxLanes+1)
		names = append(names[:maxLanes-1], name)
		lanes[name] = rest
	}
	out := make([]opLane, 0, len(names))
	for _, n := range names {
		a := lanes[n]
		out = append(out, opLane{Name: n, OK: runs(a.fate[0]), Failed: runs(a.fate[1]), Unknown: runs(a.fate[2]), Counts: a.counts})
	}
	return out, bucket
}

func fateIndex(o history.Outcome) int {
	switch o {
	case history.OK:
		return 0
	case history.Failed:
		return 1
	}
	return 2
}

func clampBucket(f float64) int {
	return int(min(max(f, 0), opBuckets-1))
}

func runs(on []bool) [][2]int32 {
	out := [][2]int32{}
	for i := 0; i < len(on); i++ {
		if !on[i] {
			continue
		}
		j := i
		for j < len(on) && on[j] {
			j++
		}
		out = append(out, [2]int32{int32(i), int32(j - i)})
		i = j
	}
	return out
}

// failoverGaps are the longest stretches with no message received by any
// probe: where a failover (or an outage) shows to clients.
func failoverGaps(ops []history.Op) []span {
	var ts []int64
	for _, op := range ops {
		if op.Kind == history.Receive && op.Outcome == history.OK {
			ts = append(ts, op.EndMS)
		}
	}
	slices.Sort(ts)
	var gaps []span
	for i := 1; i < len(ts); i++ {
		if d := ts[i] - ts[i-1]; d >= minGapMS {
			gaps = append(gaps, span{From: ts[i-1], To: ts[i]})
		}
	}
	slices.SortFunc(gaps, func(a, b span) int { return int((b.To - b.From) - (a.To - a.From)) })
	if len(gaps) > maxGaps {
		gaps = gaps[:maxGaps]
	}
	return gaps
}

func anomalyMarks(ops []history.Op, rep *validate.Report) []mark {
	imp := implicated(rep)
	if len(imp) == 0 {
		return nil
	}
	kind := map[int64]string{}
	for _, r := range rep.Results {
		for _, a := range r.Anomalies {
			for _, id := range a.OpIDs {
				if _, ok := kind[id]; !ok {
					kind[id] = r.Name + ": " + a.Kind
				}
			}
		}
	}
	var out []mark
	for _, op := range ops {
		if imp[op.ID] && len(out) < maxMarks {
			out = append(out, mark{ID: op.ID, Lane: op.Process, At: op.InvokeMS, Kind: kind[op.ID]})
		}
	}
	return out
}

// rates buckets the client ops per second of the run: completions by fate,
// publish ack latency (p50, p99, max) and publish→receive latency. Health
// probes and the final read (drain ops, thousands in one second after the
// run) are no client traffic.
func rates(ops []history.Op, t0, t1 int64) ([][3]int, [][3]int64, [][2]int64) {
	n := int(min((t1-t0)/1000+1, maxSeconds))
	rate := make([][3]int, n)
	lat := make([][]int64, n)
	deliv := make([][]int64, n)
	sec := func(ms int64) int { return min(max(int((ms-t0)/1000), 0), n-1) }
	pubAt := map[string]int64{}
	for _, op := range ops {
		if op.Kind == history.Health || op.Kind == history.Drain {
			continue
		}
		rate[sec(op.EndMS)][fateIndex(op.Outcome)]++
		if op.Kind == history.Publish {
			pubAt[op.Key+"\x00"+op.Value] = op.InvokeMS
			if op.Outcome == history.OK {
				lat[sec(op.InvokeMS)] = append(lat[sec(op.InvokeMS)], op.EndMS-op.InvokeMS)
			}
		}
	}
	seen := map[string]bool{}
	for _, op := range ops {
		k := op.Key + "\x00" + op.Value
		if op.Kind != history.Receive || op.Outcome != history.OK || seen[k] {
			continue
		}
		if at, ok := pubAt[k]; ok {
			seen[k] = true
			deliv[sec(at)] = append(deliv[sec(at)], op.EndMS-at)
		}
	}
	outLat := make([][3]int64, n)
	outDel := make([][2]int64, n)
	for i := range n {
		outLat[i] = [3]int64{pct(lat[i], 50), pct(lat[i], 99), pct(lat[i], 100)}
		outDel[i] = [2]int64{pct(deliv[i], 50), pct(deliv[i], 99)}
	}
	return rate, outLat, outDel
}

// pct is the p-th percentile of xs (sorted in place), -1 when empty.
func pct(xs []int64, p int) int64 {
	if len(xs) == 0 {
		return -1
	}
	slices.Sort(xs)
	i := (len(xs)*p + 99) / 100
	return xs[min(max(i-1, 0), len(xs)-1)]
}
