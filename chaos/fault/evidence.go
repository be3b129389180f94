package fault

import (
	"encoding/json"
	"sync"
	"time"
)

// Evidence is one injection as the report keeps it: which fault, on which
// nodes, with which args, and when (wall clock, and milliseconds since the
// Recorder's base so a report can draw it next to the health timelines).
// Zero times mean the step never happened (never observed, never healed).
type Evidence struct {
	Fault string   `json:"fault"`
	Nodes []string `json:"nodes"`
	Args  Args     `json:"args"`
	// Start: Inject called. Injected: WaitInjected saw it take effect.
	// HealStart: Heal called. End: WaitHealed saw the cluster recovered.
	Start     time.Time `json:"start"`
	Injected  time.Time `json:"injected,omitzero"`
	HealStart time.Time `json:"heal_start,omitzero"`
	End       time.Time `json:"end,omitzero"`
	// Offsets from the recorder's base, in milliseconds (-1: never).
	StartMS     int64  `json:"start_ms"`
	InjectedMS  int64  `json:"injected_ms"`
	HealStartMS int64  `json:"heal_start_ms"`
	EndMS       int64  `json:"end_ms"`
	Error       string `json:"error,omitempty"`
	// Detail is what the fault itself reports once observed (power-loss:
	// what each node's store dropped), if it reports anything.
	Detail any `json:"detail,omitempty"`
}

// Recorder collects the evidence of every injection a Runner makes. It is
// safe for concurrent use; writing it to a file is the report's job.
type Recorder struct {
	base time.Time
	mu   sync.Mutex
	list []*Evidence
}

// NewRecorder starts a recorder whose offsets count from base (zero: now).
func NewRecorder(base time.Time) *Recorder {
	if base.IsZero() {
		base = time.Now()
	}
	return &Recorder{base: base}
}

// Base is the time offsets count from.
func (r *Recorder) Base() time.Time { return r.base }

func (r *Recorder) add(e *Evidence) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, e)
}

// update applies f to e under the lock.
func (r *Recorder) update(e *Evidence, f func(*Evidence)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(e)
}

// Records returns a copy of every injection so far, offsets filled in.
func (r *Recorder) Records() []Evidence {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Evidence, len(r.list))
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return t.Sub(r.base).Milliseconds()
	}
	for i, e := range r.list {
		c := *e
		c.Nodes = append([]string(nil), e.Nodes...)
		c.StartMS, c.InjectedMS, c.HealStartMS, c.EndMS = ms(e.Start), ms(e.Injected), ms(e.HealStart), ms(e.End)
		out[i] = c
	}
	return out
}

// MarshalJSON writes {"base": ..., "injections": [...]}.
func (r *Recorder) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Base       time.Time  `json:"base"`
		Injections []Evidence `json:"injections"`
	}{r.base, r.Records()})
}
