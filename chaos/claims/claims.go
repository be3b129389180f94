// Package claims is the registry of runbook claims; CLAIMS.md at the
// repository root is generated from it (go run ./chaos/claims/gen).
// Specs label themselves through it, so a misspelt claim id fails when the
// spec tree is built instead of silently filtering nothing.
package claims

import (
	"fmt"
	"strings"
)

// Claim is one runbook claim.
type Claim struct {
	ID      string
	Summary string
	// Targets the claim must pass on: in-process nodes, a deployed cluster
	// over SSH, and real membershipd subprocesses (--target=process: every
	// in-process claim, plus those that need real signals or disks).
	InProc, SSH, Process bool
}

// All lists every claim, in the order CLAIMS.md shows them.
var All = []Claim{
	{"quorum-start", "three nodes started together form a quorum; healthz 200 with the full posture on every node", true, true, true},
	{"no-self-serve", "a lone node never serves: healthz 503 naming quorum, no bucket, no client", true, true, true},
	{"staggered-start", "start one, then a second (at N nodes: up to N-1): they agree on a meta leader within the bootstrap budget; the last one catches up and all serve", true, true, true},
	{"cold-start-fixes", "the running binary reports route pooling off, no-advertise and the KV-open retry", true, true, true},
	{"r3", "all six control-plane buckets are R3 with 2/2 followers current", true, true, true},
	{"r1-to-r3", "buckets created at R1 are raised to R3 in place with every key still readable", true, true, true},
	{"first-admin", "the first admin is seeded through the live cluster and present on every node", true, true, true},
	{"bootstrap-orphan", "a store holding a control-plane stream written by the old loopback bootstrap is refused at start-up (exit 2, naming the stream and the path to move aside); moved aside, the seed is never served or replicated", true, false, true},
	{"user-add-live", "user add --store kv on a live cluster prints the user and followers_current=2/2", true, true, true},
	{"user-add-idempotent", "re-adding a key fails with already registered and changes nothing", true, true, true},
	{"user-add-one-down", "user add --store kv commits with the KV leader down", true, true, true},
	{"user-revoke", "revoke keeps the row, denies both planes and closes live connections within 2 s", true, true, true},
	{"two-down-fail-closed", "with two nodes down the survivor denies everything within 2 s and loses nothing", true, true, true},
	{"failover-zero-loss", "a client whose node stops mid-stream fails over with every acked message received once, in order", true, true, true},
	{"power-loss-durable", "a power loss of every node mid-publish and mid-user add keeps every acked message and user add on every node; with --sync default the same run finds acked writes lost (negative control)", false, false, true},
	{"size-5", "the whole suite passes at --size 5 (\"two down\" is a majority down); at five nodes a two-node side holding the nonces group's majority denies within 2 s while the three-node side serves within election time + grace", true, false, true},
	{"load-failover", "500 connected clients in 20 rooms with steady traffic, one node SIGKILLed (membershipd processes): every client re-admitted, no acked message lost, the surviving majority never denied", false, false, true},
	{"acl", "a member reaches only its own rooms", true, true, true},
	{"acl-jetstream", "a member cannot escape its ACL through JetStream: no push consumer, no other member's consumer, no consumer past the limit or after a revoke", true, true, true},
	{"route-ca", "the route port takes only route-CA certificates; the client port demands a valid client certificate over TLS", true, true, true},
	{"anti-replay", "replayed or stale signed control-plane requests are rejected", true, true, true},
	{"e2e", "room messages are stored as ciphertext only members can decrypt", true, true, true},
	{"resource-limits", "a flooding member is stopped at its room's MaxMsgSize and MaxBytes (reject new) and at its room quota, while user add and revoke keep working", true, true, true},
	{"rollback-sqlite", "a node restarted without --store kv runs standalone on SQLite; the KV stays on disk", true, false, true},
	{"migrate-to-kv", "migrate-to-kv copies SQLite rows into the live KV, idempotently, loopback only without --ca", true, false, true},
	{"deploy-dry-run", "deploy without --yes prints the plan and changes nothing; placeholders are refused", false, true, false},
	{"deploy-apply", "deploy --yes stages everything atomically with secrets 0600 and is idempotent", false, true, false},
	{"deploy-preflight", "a command that changes hosts connects to every host first and changes nothing anywhere if one fails", false, true, false},
	{"rolling-upgrade", "the rollout goes one node at a time and stops at the first unhealthy node", false, true, false},
	{"live-readonly", "a live run without --allow-disruptive changes nothing on any host: deployed files (sha256), unit, running binary, streams and the operator's users identical; spec users revoked", false, true, false},
	{"live-restore", "a disruptive live run restores the operator's binary, unit and config on every node, restarting changed nodes one at a time; every node healthy on the operator's version; spec users revoked", false, true, false},
	{"kill9-zero-loss", "SIGKILL of the client's node, then of the room stream's leader, mid-stream: every acked message received once, in order; the node restarts on its data and every replica holds the same messages", false, true, true},
	{"pause-zero-loss", "SIGSTOP of the room stream's leader for 10 s mid-stream: no acked loss or duplicate, the majority writes within election time, the resumed node serves nothing stale", false, true, true},
	{"partition-fails-closed", "an isolated running node (RST and DROP, R3 and R1) answers 503 and admits nothing within 2 s for 20 s; the majority stays 200 and commits; after the heal its allowlist equals the KV and every replica of the heartbeat stream catches up within 30 s", true, true, true},
	{"one-way-partition", "a one-way partition, both directions: only a side that can commit serves, and no users-bucket write acked on one side is missing on the other", true, true, true},
	{"revoke-under-partition", "a node cut off only from the users leader refuses a user revoked through another node within 2 s (connections closed, connects and signed requests refused), or fails closed", true, true, true},
	{"certs", "route CA separate from client CA; per-node route and data-plane certs; --force rotates the route CA", true, true, true},
}

// On reports whether the claim must pass on target ("inproc", "process" or
// "ssh"; "" is inproc).
func (c Claim) On(target string) bool {
	switch target {
	case "ssh":
		return c.SSH
	case "process":
		return c.Process
	default:
		return c.InProc
	}
}

// LabelPrefix starts every claim label.
const LabelPrefix = "claim:"

var byID = func() map[string]Claim {
	m := make(map[string]Claim, len(All))
	for _, c := range All {
		m[c.ID] = c
	}
	return m
}()

// Lookup finds a claim by id.
func Lookup(id string) (Claim, bool) {
	c, ok := byID[id]
	return c, ok
}

// Label returns the label for a claim id, or an error naming the known ids.
func Label(id string) (string, error) {
	if _, ok := byID[id]; !ok {
		ids := make([]string, 0, len(All))
		for _, c := range All {
			ids = append(ids, c.ID)
		}
		return "", fmt.Errorf("unknown claim %q (known: %s)", id, strings.Join(ids, ", "))
	}
	return LabelPrefix + id, nil
}

// FromLabels returns the claim ids among a spec's labels.
func FromLabels(labels []string) []string {
	var out []string
	for _, l := range labels {
		if id, ok := strings.CutPrefix(l, LabelPrefix); ok {
			out = append(out, id)
		}
	}
	return out
}
