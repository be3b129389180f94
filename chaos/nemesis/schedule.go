package nemesis

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/unibus/clusterkit/chaos/fault"
)

// Step is one fault of a schedule: what was planned (QuietMS, HoldMS,
// fault and args, all from the seed) and what actually ran (the offsets,
// in milliseconds since the run's base; -1 never).
type Step struct {
	Fault string     `json:"fault"`
	Args  fault.Args `json:"args"`
	// QuietMS: the quiet period planned before the inject; HoldMS: how
	// long the fault was planned to last.
	QuietMS int64 `json:"quiet_ms"`
	HoldMS  int64 `json:"hold_ms"`
	// InjectMS: Inject called; InjectedMS: its observer confirmed it;
	// HealMS: Heal called; HealedMS: the cluster was seen recovered.
	InjectMS   int64 `json:"inject_ms"`
	InjectedMS int64 `json:"injected_ms"`
	HealMS     int64 `json:"heal_ms"`
	HealedMS   int64 `json:"healed_ms"`
	// DriftMS (replays): how late the inject was against the recorded
	// offset (a previous heal that took longer than when recorded).
	DriftMS int64  `json:"drift_ms,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Schedule is schedule.json: the faults a run injected, in order, with
// their offsets. A replay (Config.Replay) injects the same faults with the
// same args in the same order at the same offsets.
type Schedule struct {
	Seed       uint64   `json:"seed"`
	Target     string   `json:"target"`
	DurationMS int64    `json:"duration_ms"`
	Faults     []string `json:"faults"`
	Sync       string   `json:"sync,omitempty"`
	ReplayOf   string   `json:"replay_of,omitempty"`
	Steps      []Step   `json:"steps"`
	// Reproduces and CannotReproduce state what a replay of this
	// schedule does and does not repeat.
	Reproduces      string `json:"reproduces"`
	CannotReproduce string `json:"cannot_reproduce"`
}

// The replay contract, written into every schedule.json.
const (
	replayReproduces = "the faults, their args (victims, modes, latency), their order, and their inject and heal offsets " +
		"(±1 s; an inject waits for the previous heal, so a slower recovery shows as drift_ms); the seed, so the traffic mix and its rates"
	replayCannot = "scheduler and network timing: which operation is in flight at the instant of a fault, raft elections and " +
		"which node leads which stream, client reconnect order, message ids (fresh per run), and therefore the exact history"
)

// Timing of the generated schedule.
const (
	quietMin, quietMax = 5 * time.Second, 10 * time.Second
	holdMin, holdMax   = 5 * time.Second, 15 * time.Second
)

// planner draws the next step from the seed: quiet time, fault, victims,
// hold time. Only the planner uses its generator, so the plan of a seed
// does not depend on traffic or timing.
type planner struct {
	rng    *rand.Rand
	faults []string
	nodes  []string
}

func newPlanner(seed uint64, faults, nodes []string) *planner {
	return &planner{rng: rand.New(rand.NewPCG(seed, 0x6e656d65)), faults: faults, nodes: nodes}
}

func (p *planner) between(lo, hi time.Duration) int64 {
	return (lo + time.Duration(p.rng.Int64N(int64(hi-lo)+1))).Milliseconds()
}

func (p *planner) next() Step {
	s := Step{QuietMS: p.between(quietMin, quietMax), HoldMS: p.between(holdMin, holdMax)}
	s.Fault = p.faults[p.rng.IntN(len(p.faults))]
	s.Args = p.args(s.Fault)
	return s
}

// args picks a fault's victims and parameters. Single-node victims keep a
// majority up: the nemesis probes failover, not total outage (power-loss
// takes every node by design).
func (p *planner) args(name string) fault.Args {
	one := func() []string { return []string{p.nodes[p.rng.IntN(len(p.nodes))]} }
	mode := func() fault.Mode {
		if p.rng.IntN(2) == 0 {
			return fault.RST
		}
		return fault.Drop
	}
	switch name {
	case "kill", "stop", "pause", "restart", "one-way":
		return fault.Args{Nodes: one()}
	case "partition":
		return fault.Args{Nodes: one(), Mode: mode()}
	case "isolate-leader":
		streams := []string{"meta", "UNIBUS_users"}
		return fault.Args{Stream: streams[p.rng.IntN(len(streams))], Mode: mode()}
	case "latency":
		return fault.Args{Nodes: one(), Latency: time.Duration(20+p.rng.IntN(181)) * time.Millisecond}
	case "part-kill":
		i := p.rng.IntN(len(p.nodes))
		j := (i + 1 + p.rng.IntN(len(p.nodes)-1)) % len(p.nodes)
		return fault.Args{Nodes: []string{p.nodes[i], p.nodes[j]}, Mode: mode()}
	}
	return fault.Args{}
}

// LoadSchedule reads a schedule.json for a replay.
func LoadSchedule(path string) (*Schedule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replay schedule: %w", err)
	}
	var s Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("replay schedule %s: not a schedule.json: %w", path, err)
	}
	if s.DurationMS <= 0 {
		return nil, fmt.Errorf("replay schedule %s: no duration_ms", path)
	}
	for i, st := range s.Steps {
		if _, err := fault.Lookup(st.Fault); err != nil {
			return nil, fmt.Errorf("replay schedule %s: step %d: %w", path, i, err)
		}
		if st.InjectMS < 0 || st.HealMS < st.InjectMS {
			return nil, fmt.Errorf("replay schedule %s: step %d (%s): inject_ms %d, heal_ms %d", path, i, st.Fault, st.InjectMS, st.HealMS)
		}
	}
	return &s, nil
}

// ReplayTolerance is how far a replayed inject or heal may be from its
// recorded offset.
const ReplayTolerance = time.Second

// ReplayDrift compares the replayed steps with the recorded ones.
func ReplayDrift(want, got []Step) string {
	text, _ := replayCheck(want, got)
	return text
}

// replayCheck describes the replay against the recording; ok is false when
// it did not inject the same faults with the same args in the same order
// at the same offsets (within ReplayTolerance).
func replayCheck(want, got []Step) (string, bool) {
	if len(got) != len(want) {
		return fmt.Sprintf("ran %d of %d steps", len(got), len(want)), false
	}
	var worst int64
	for i := range want {
		if got[i].Fault != want[i].Fault || argsText(got[i].Args) != argsText(want[i].Args) {
			return fmt.Sprintf("step %d is %s %s, recorded %s %s", i+1, got[i].Fault, argsText(got[i].Args), want[i].Fault, argsText(want[i].Args)), false
		}
		for _, d := range []int64{got[i].InjectMS - want[i].InjectMS, got[i].HealMS - want[i].HealMS} {
			worst = max(worst, d, -d)
		}
	}
	if worst > ReplayTolerance.Milliseconds() {
		return fmt.Sprintf("%d steps, same faults in the same order, but an inject or heal %d ms off its recorded offset (tolerance %s)", len(got), worst, ReplayTolerance), false
	}
	return fmt.Sprintf("%d steps, same faults in the same order, inject and heal offsets within %d ms of the recording", len(got), worst), true
}
