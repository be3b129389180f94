package node

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/authn"
)

// Posture is what the node enforces, as /healthz reports it.
type Posture struct {
	BusAuth string `json:"bus_auth"`
	ACL     bool   `json:"acl"`
	TLS     bool   `json:"tls"`
	Cluster bool   `json:"cluster"`
	Store   string `json:"store"`
}

// QuorumInfo is the gate's evidence, for operators reading /healthz.
type QuorumInfo struct {
	InQuorum       bool     `json:"in_quorum"`
	LastPutAgeMS   int64    `json:"last_put_age_ms"`
	ReachablePeers []string `json:"reachable_peers"`
}

// Health is the /healthz document.
type Health struct {
	Status     string     `json:"status"` // "ok" or "unavailable"
	Node       string     `json:"node"`
	Reason     string     `json:"reason,omitempty"`
	Posture    Posture    `json:"posture"`
	MetaLeader string     `json:"meta_leader"`
	KVReplicas int        `json:"kv_replicas"`
	Buckets    []string   `json:"buckets_open"`
	Features   []string   `json:"features"`
	Quorum     QuorumInfo `json:"quorum"`
	Version    string     `json:"version"`
	UptimeMS   int64      `json:"uptime_ms"`
}

// Health computes the health document: ok only when the quorum gate says
// quorum and every control-plane bucket is open.
func (n *Node) Health() Health {
	v := n.Verdict()
	h := Health{
		Node: n.cfg.Name,
		Posture: Posture{
			BusAuth: string(n.cfg.BusAuth),
			ACL:     n.cfg.BusAuth == authn.Enforce,
			TLS:     n.opts.TLSConfig != nil && n.opts.TLSConfig.ClientAuth == tls.RequireAndVerifyClientCert,
			Cluster: n.srv != nil && n.srv.JetStreamIsClustered(),
			Store:   n.cfg.Store,
		},
		MetaLeader: n.metaLeader(),
		KVReplicas: n.cfg.KVReplicas,
		Features:   featuresOf(n.opts, true),
		Quorum:     QuorumInfo{InQuorum: v.InQuorum, LastPutAgeMS: v.LastPutAge.Milliseconds(), ReachablePeers: v.ReachablePeers},
		Version:    Version,
		UptimeMS:   time.Since(n.started).Milliseconds(),
	}
	if v.LastPutAge < 0 {
		h.Quorum.LastPutAgeMS = -1
	}
	n.mu.Lock()
	opened, waiting := n.opened, n.waiting
	n.mu.Unlock()
	for _, o := range opened {
		h.Buckets = append(h.Buckets, o.Bucket)
	}
	var reasons []string
	if n.cfg.Store == StoreSQLite {
		// Standalone: healthy when it runs; there is no quorum to have.
		h.Status = "ok"
		h.Quorum = QuorumInfo{InQuorum: true, LastPutAgeMS: -1}
		h.Reason = ""
		return h
	}
	if !v.InQuorum {
		reasons = append(reasons, v.Reason)
	}
	if !n.allow.Ready() {
		reasons = append(reasons, "allowlist not loaded yet")
	}
	if opened == nil {
		w := "control-plane buckets not open yet"
		if waiting != "" {
			w += ": " + waiting
		}
		reasons = append(reasons, w)
	}
	if len(reasons) == 0 {
		h.Status = "ok"
	} else {
		h.Status = "unavailable"
		h.Reason = strings.Join(reasons, "; ")
	}
	return h
}

func (n *Node) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	h := n.Health()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if h.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

var _ server.Logger = (*natsLogger)(nil)
