// Package check holds the checkers that turn observations into verdicts.
// Each returns a Result with reasons, so a failing spec says what was seen,
// not just that a boolean was false.
package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/unibus/clusterkit/chaos"
)

// Result is a checker's verdict.
type Result struct {
	Check   string
	OK      bool
	Reasons []string
}

func (r Result) String() string {
	s := "PASS"
	if !r.OK {
		s = "FAIL"
	}
	if len(r.Reasons) == 0 {
		return fmt.Sprintf("%s %s", s, r.Check)
	}
	return fmt.Sprintf("%s %s: %s", s, r.Check, strings.Join(r.Reasons, "; "))
}

func fail(name string, format string, args ...any) Result {
	return Result{Check: name, Reasons: []string{fmt.Sprintf(format, args...)}}
}

// enough guards every checker's own assumption: a timeline too short or
// too sparse proves nothing, so it fails instead of passing vacuously.
func enough(name string, tl chaos.Timeline, span time.Duration, every time.Duration) (Result, bool) {
	if len(tl.Probes) < 2 {
		return fail(name, "%s: only %d probes recorded", tl.Node, len(tl.Probes)), false
	}
	got := tl.Probes[len(tl.Probes)-1].At.Sub(tl.Probes[0].At)
	if got < span {
		return fail(name, "%s: observed only %s of the required %s", tl.Node, got.Round(time.Millisecond), span), false
	}
	for i := 1; i < len(tl.Probes); i++ {
		if gap := tl.Probes[i].At.Sub(tl.Probes[i-1].At); gap > every {
			return fail(name, "%s: a %s gap between probes at %s leaves the window unobserved",
				tl.Node, gap.Round(time.Millisecond), tl.Probes[i-1].At.Format("15:04:05.000")), false
		}
	}
	return Result{}, true
}

// MaxProbeGap is the largest gap between probes a checker accepts.
const MaxProbeGap = 3 * time.Second

// AlwaysHealthy: every probe of the node was 200 ok, over at least span.
func AlwaysHealthy(tl chaos.Timeline, span time.Duration) Result {
	name := "always-healthy(" + tl.Node + ")"
	if r, ok := enough(name, tl, span, MaxProbeGap); !ok {
		return r
	}
	bad := 0
	first := ""
	for _, p := range tl.Probes {
		if !p.OK() {
			bad++
			if first == "" {
				first = fmt.Sprintf("at %s: %s", p.At.Format("15:04:05.000"), p)
			}
		}
	}
	if bad > 0 {
		return fail(name, "%d of %d probes not ok, first %s", bad, len(tl.Probes), first)
	}
	return Result{Check: name, OK: true, Reasons: []string{fmt.Sprintf("%d probes over %s", len(tl.Probes), span)}}
}

// NeverDenied: every probe the node answered over at least span was 200
// ok, and probes it did not answer in time (a timeout: the machine is
// saturated, e.g. by a reconnect storm of hundreds of TLS handshakes) span
// at most unanswered in total. A refused connection or any other error
// fails: a serving node's HTTPS port does not go away. For claims about
// the gate's answers under load, where a late answer is not a denial.
func NeverDenied(tl chaos.Timeline, span, unanswered time.Duration) Result {
	name := "never-denied(" + tl.Node + ")"
	if r, ok := enough(name, tl, span, MaxProbeGap); !ok {
		return r
	}
	late, n, first, bad := tolerated(tl, func(p chaos.Probe) bool { return p.Err != nil && isTimeout(p.Err) })
	if bad != nil {
		return fail(name, "at %s%s: %s", bad.At.Format("15:04:05.000"), probeGapBefore(tl, bad), *bad)
	}
	if late > unanswered {
		return fail(name, "unanswered probes for %s in total, over the %s budget; %s", late.Round(time.Millisecond), unanswered, first)
	}
	why := fmt.Sprintf("%d probes over %s, never denied", len(tl.Probes), span)
	if n > 0 {
		why += fmt.Sprintf("; %d probes timed out, %s in all (%s)", n, late.Round(time.Millisecond), first)
	}
	return Result{Check: name, OK: true, Reasons: []string{why}}
}

// tolerated walks the probes that were not ok: the first that ok does not
// tolerate is returned as bad; for the others it sums the time until the
// next probe (total), counts them and describes the first.
func tolerated(tl chaos.Timeline, ok func(chaos.Probe) bool) (total time.Duration, n int, first string, bad *chaos.Probe) {
	for i, p := range tl.Probes {
		if p.OK() {
			continue
		}
		if !ok(p) {
			return total, n, first, &tl.Probes[i]
		}
		n++
		if first == "" {
			first = fmt.Sprintf("first at %s: %s", p.At.Format("15:04:05.000"), p)
		}
		if i+1 < len(tl.Probes) {
			total += tl.Probes[i+1].At.Sub(p.At)
		}
	}
	return total, n, first, nil
}

// probeGapBefore says how long before bad the previous probe started. The
// probes run on a fixed interval, so a gap of several intervals means the
// observer itself was starved, and on the in-process target so were the
// nodes it shares a process with: a denial then is the gate failing closed
// on a stalled host, not a healthy majority refused.
func probeGapBefore(tl chaos.Timeline, bad *chaos.Probe) string {
	for i := range tl.Probes {
		if &tl.Probes[i] == bad && i > 0 {
			return fmt.Sprintf(" (the probe before it %s earlier)", bad.At.Sub(tl.Probes[i-1].At).Round(time.Millisecond))
		}
	}
	return ""
}

// isTimeout: the probe's request timed out (no answer in time), as opposed
// to refused or failed.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// KeepsQuorum: the node never denied for want of quorum over at least
// span, and its other denials were all the allowlist freshness rule ("allowlist
// stale: ..."), for at most allowlistBudget in total. That rule denies a
// node that has not heard from the users stream leader for 1 s while a peer
// has (the 2 s revocation deadline rests on it), so a majority node can
// blink while the users leader changes in a step-down storm; the quorum
// gate itself must hold throughout.
func KeepsQuorum(tl chaos.Timeline, span, allowlistBudget time.Duration) Result {
	name := "keeps-quorum(" + tl.Node + ")"
	if r, ok := enough(name, tl, span, MaxProbeGap); !ok {
		return r
	}
	denied, _, first, bad := tolerated(tl, func(p chaos.Probe) bool {
		return p.Err == nil && p.Code == 503 && allowlistOnly(p.Health.Reason)
	})
	if bad != nil {
		return fail(name, "at %s%s: %s", bad.At.Format("15:04:05.000"), probeGapBefore(tl, bad), *bad)
	}
	if denied > allowlistBudget {
		return fail(name, "allowlist-stale denials for %s in total, over the %s budget; %s", denied.Round(time.Millisecond), allowlistBudget, first)
	}
	why := fmt.Sprintf("%d probes over %s, never denied for quorum", len(tl.Probes), span)
	if denied > 0 {
		why += fmt.Sprintf("; allowlist-stale for %s (%s)", denied.Round(time.Millisecond), first)
	}
	return Result{Check: name, OK: true, Reasons: []string{why}}
}

// allowlistOnly: the allowlist freshness rule is the only reason given
// (the quorum and heartbeat reasons come first in a /healthz reason, the
// buckets-not-open one after it).
func allowlistOnly(reason string) bool {
	return strings.HasPrefix(reason, "allowlist stale") && !strings.Contains(reason, "buckets not open")
}

// NeverServes: every probe was a 503 whose reason mentions want (a refused
// or failed request is not accepted as "denied": the node must answer).
func NeverServes(tl chaos.Timeline, span time.Duration, want string) Result {
	name := "never-serves(" + tl.Node + ")"
	if r, ok := enough(name, tl, span, MaxProbeGap); !ok {
		return r
	}
	for _, p := range tl.Probes {
		if p.Err != nil || p.Code != 503 || p.Health.Status == "ok" {
			return fail(name, "at %s the node answered %s", p.At.Format("15:04:05.000"), p)
		}
		if !strings.Contains(p.Health.Reason, want) {
			return fail(name, "at %s the 503 reason %q does not mention %q", p.At.Format("15:04:05.000"), p.Health.Reason, want)
		}
	}
	return Result{Check: name, OK: true, Reasons: []string{fmt.Sprintf("%d probes, all 503, over %s", len(tl.Probes), span)}}
}

// FailsClosedWithin: in the window [from, until), the node's first 503
// came within deadline of from, and every later probe in the window stayed
// 503 (no flapping back to 200 inside NATS's own ~15 s fail-open window).
// It returns the measured time to the first denial.
func FailsClosedWithin(tl chaos.Timeline, from, until time.Time, deadline time.Duration) (Result, time.Duration) {
	name := "fails-closed(" + tl.Node + ")"
	var in []chaos.Probe
	for _, p := range tl.Probes {
		if !p.At.Before(from) && p.At.Before(until) {
			in = append(in, p)
		}
	}
	sub := chaos.Timeline{Node: tl.Node, Probes: in}
	if r, ok := enough(name, sub, until.Sub(from)-MaxProbeGap, MaxProbeGap); !ok {
		return r, 0
	}
	firstDeny := -1
	for i, p := range in {
		if p.Code == 503 {
			firstDeny = i
			break
		}
	}
	if firstDeny < 0 {
		return fail(name, "never answered 503 in %d probes", len(in)), 0
	}
	took := in[firstDeny].At.Sub(from)
	if took > deadline {
		return fail(name, "first 503 after %s, deadline %s", took.Round(time.Millisecond), deadline), took
	}
	for _, p := range in[firstDeny:] {
		if p.Code != 503 {
			return fail(name, "answered %s at %s (%s after the fault) after denying", p, p.At.Format("15:04:05.000"),
				p.At.Sub(from).Round(time.Millisecond)), took
		}
	}
	held := in[len(in)-1].At.Sub(in[firstDeny].At)
	return Result{Check: name, OK: true, Reasons: []string{fmt.Sprintf("first 503 after %s, then %d probes all 503 for %s",
		took.Round(time.Millisecond), len(in)-firstDeny, held.Round(time.Millisecond))}}, took
}

// Window keeps the probes of tl inside [from, until).
func Window(tl chaos.Timeline, from, until time.Time) chaos.Timeline {
	out := chaos.Timeline{Node: tl.Node}
	for _, p := range tl.Probes {
		if !p.At.Before(from) && p.At.Before(until) {
			out.Probes = append(out.Probes, p)
		}
	}
	return out
}
