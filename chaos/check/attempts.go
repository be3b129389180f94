package check

import (
	"fmt"
	"time"
)

// Attempt is one try at something that must be refused (a connection, a
// write, a read that would authorize): when it started and ended, whether
// it was refused, and what came back.
type Attempt struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Refused bool      `json:"refused"`
	Detail  string    `json:"detail"`
}

// RefusedWithin: of the attempts that started in [from, until), every one
// that started deadline or more after from was refused, and each refusal
// came back within answer (a refusal that takes a client timeout to arrive is not
// "rejected within a stated deadline"). It needs at least min attempts in
// the window, so a stalled prober cannot pass vacuously.
func RefusedWithin(what string, as []Attempt, from, until time.Time, deadline, answer time.Duration, min int) Result {
	name := "refused(" + what + ")"
	var in []Attempt
	for _, a := range as {
		if !a.Start.Before(from) && a.Start.Before(until) {
			in = append(in, a)
		}
	}
	if len(in) < min {
		return fail(name, "only %d attempts in the window, need %d", len(in), min)
	}
	first := time.Duration(-1)
	for _, a := range in {
		off := a.Start.Sub(from)
		if a.Refused {
			if first < 0 {
				first = off
			}
			if took := a.End.Sub(a.Start); took > answer {
				return fail(name, "refusal at +%s took %s to arrive (limit %s): %s", off.Round(time.Millisecond), took.Round(time.Millisecond), answer, a.Detail)
			}
			continue
		}
		if off >= deadline {
			return fail(name, "attempt at +%s was served: %s", off.Round(time.Millisecond), a.Detail)
		}
	}
	if first < 0 {
		return fail(name, "no attempt was refused")
	}
	return Result{Check: name, OK: true, Reasons: []string{fmt.Sprintf("%d attempts over %s; first refused at +%s; every attempt from +%s on refused",
		len(in), until.Sub(from).Round(time.Second), first.Round(time.Millisecond), deadline)}}
}
