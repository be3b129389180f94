package validate

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/unibus/clusterkit/chaos/history"
)

// revokedWindow is when an identity must be refused everywhere.
type revokedWindow struct {
	from, to int64 // [from, to)
	revoke   int64 // the revoke op (0: revoked before the run)
}

// identityOf is the sign key of the identity op acted as: its Signer, or
// for a connect recorded without one (an older history) its Key. "" when
// op is no attempt by an identity to use the bus (a request without a
// signer names no identity: its Key is "METHOD PATH").
func identityOf(op history.Op) string {
	switch op.Kind {
	case history.Connect:
		if op.Signer != "" {
			return op.Signer
		}
		return op.Key
	case history.Request:
		return op.Signer
	}
	return ""
}

// Revocation: no operation by a revoked identity succeeds anywhere after
// the revoke's completion + deadline. An identity is revoked from the end
// of an ok user-revoke of its key plus deadline until the invoke of the
// next user-add that may have re-registered it (ok, ending after the
// revoke began; or unknown). A key whose revoke raced an unknown add
// invoked before it is skipped (the add may land after the revoke) and
// counted as ambiguous. Connections and signed requests count, by the
// identity they acted as (Op.Signer). A connect whose Value (role) is "revoked" for a
// key no user-revoke in the history touches was revoked before the run:
// it must be refused from the start. Only ops that begin inside a window
// count.
func Revocation(ops []history.Op, deadline time.Duration) Result {
	r := newResult("revocation")
	type keyOps struct {
		revokes, adds []history.Op
		preRevoked    bool
	}
	keys := map[string]*keyOps{}
	get := func(k string) *keyOps {
		if keys[k] == nil {
			keys[k] = &keyOps{}
		}
		return keys[k]
	}
	for _, op := range ops {
		switch {
		case op.Kind == history.UserRevoke && op.Outcome == history.OK:
			get(op.Key).revokes = append(get(op.Key).revokes, op)
		case op.Kind == history.UserAdd && op.Outcome != history.Failed:
			get(op.Key).adds = append(get(op.Key).adds, op)
		case op.Kind == history.Connect && op.Value == "revoked":
			get(identityOf(op)).preRevoked = true
		}
	}
	windows := map[string][]revokedWindow{}
	for k, ko := range keys {
		// nextAdd: the earliest invoke of an add that may take effect
		// after t (and -inf when one invoked earlier is still in doubt).
		nextAdd := func(t int64) int64 {
			next := int64(math.MaxInt64)
			for _, a := range ko.adds {
				switch {
				case a.Outcome == history.Unknown && a.InvokeMS < t:
					return math.MinInt64
				case a.EndMS >= t:
					next = min(next, max(a.InvokeMS, t))
				}
			}
			return next
		}
		if len(ko.revokes) == 0 {
			if ko.preRevoked {
				windows[k] = append(windows[k], revokedWindow{from: math.MinInt64, to: nextAdd(math.MinInt64)})
			}
			continue
		}
		for _, rv := range ko.revokes {
			to := nextAdd(rv.InvokeMS)
			if to == math.MinInt64 {
				r.Counts["ambiguous"]++
				continue
			}
			from := rv.EndMS + deadline.Milliseconds()
			if from < to {
				windows[k] = append(windows[k], revokedWindow{from: from, to: to, revoke: rv.ID})
			}
		}
	}
	r.Counts["revoked-identities"] = len(windows)
	r.Counts["attempts-while-revoked"] = 0
	r.Counts["violations"] = 0
	type hit struct {
		key    string
		revoke int64
	}
	viol := map[hit][]int64{}
	for _, op := range ops {
		id := identityOf(op)
		if id == "" {
			continue
		}
		for _, w := range windows[id] {
			if op.InvokeMS < w.from || op.InvokeMS >= w.to {
				continue
			}
			r.Counts["attempts-while-revoked"]++
			if op.Outcome == history.OK {
				r.Counts["violations"]++
				h := hit{id, w.revoke}
				viol[h] = append(viol[h], op.ID)
			}
			break
		}
	}
	hits := make([]hit, 0, len(viol))
	for h := range viol {
		hits = append(hits, h)
	}
	slices.SortFunc(hits, func(a, b hit) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.revoke, b.revoke)) })
	for _, h := range hits {
		ids := viol[h]
		if h.revoke == 0 {
			r.fail("revoked-admitted", ids, "identity %s, revoked before the run, succeeded %d time(s)", short(h.key), len(ids))
			continue
		}
		r.fail("revoked-admitted", append([]int64{h.revoke}, ids...),
			"identity %s succeeded %d time(s) more than %s after its revoke (op %d) completed", short(h.key), len(ids), deadline, h.revoke)
	}
	return r
}
