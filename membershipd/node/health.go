package node

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// syncPosture renders the fsync policy (--sync); "" for a SQLite node
// (no JetStream). The config, not the server options: nats-server fills
// in its default interval at start.
func (n *Node) syncPosture() string {
	if n.cfg.Store == StoreSQLite {
		return ""
	}
	sp, _ := ParseSync(n.cfg.Sync) // validated in New
	return sp.String()
}

// Posture is what the node enforces, as /healthz reports it.
type Posture struct {
	BusAuth string `json:"bus_auth"`
	ACL     bool   `json:"acl"`
	TLS     bool   `json:"tls"`
	Cluster bool   `json:"cluster"`
	Store   string `json:"store"`
	// Sync is the JetStream fsync policy: "always", "default" or an
	// interval (--sync).
	Sync string `json:"sync"`
}

// QuorumInfo is the gate's evidence, for operators reading /healthz.
type QuorumInfo struct {
	InQuorum       bool     `json:"in_quorum"`
	LastPutAgeMS   int64    `json:"last_put_age_ms"`
	ReachablePeers []string `json:"reachable_peers"`
	// ClusterSize is N; the gate needs a majority of it answering.
	ClusterSize int `json:"cluster_size"`
	// HeartbeatBucket is where heartbeats go, replicated at R = N.
	HeartbeatBucket string `json:"heartbeat_bucket"`
}

// AllowlistInfo is the allowlist's freshness, for operators.
type AllowlistInfo struct {
	Fresh bool `json:"fresh"`
	// ProofAgeMS: since the users stream leader last confirmed the
	// allowlist current (-1 never).
	ProofAgeMS int64  `json:"proof_age_ms"`
	Reason     string `json:"reason"`
}

// Health is the /healthz document.
type Health struct {
	Status     string         `json:"status"` // "ok" or "unavailable"
	Node       string         `json:"node"`
	Reason     string         `json:"reason,omitempty"`
	Posture    Posture        `json:"posture"`
	MetaLeader string         `json:"meta_leader"`
	KVReplicas int            `json:"kv_replicas"`
	Buckets    []string       `json:"buckets_open"`
	Features   []string       `json:"features"`
	Quorum     QuorumInfo     `json:"quorum"`
	Allowlist  *AllowlistInfo `json:"allowlist,omitempty"`
	Version    string         `json:"version"`
	UptimeMS   int64          `json:"uptime_ms"`
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
			Sync:    n.syncPosture(),
		},
		MetaLeader: n.metaLeader(),
		KVReplicas: n.cfg.KVReplicas,
		Features:   featuresOf(n.opts, true),
		Quorum: QuorumInfo{InQuorum: v.InQuorum, LastPutAgeMS: v.LastPutAge.Milliseconds(), ReachablePeers: v.ReachablePeers,
			ClusterSize: n.cfg.size(), HeartbeatBucket: kv.HeartbeatsBucket},
		Version:  Version,
		UptimeMS: time.Since(n.started).Milliseconds(),
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
	if why := n.heartbeatProblem(); why != "" {
		reasons = append(reasons, "no quorum: "+why)
	}
	if lv, ok := n.allowlistVerdict(); ok {
		h.Allowlist = &AllowlistInfo{Fresh: lv.Fresh, ProofAgeMS: lv.ProofAge.Milliseconds(), Reason: lv.Reason}
		if lv.ProofAge < 0 {
			h.Allowlist.ProofAgeMS = -1
		}
		if !lv.Fresh {
			reasons = append(reasons, lv.Reason)
		}
	} else if !n.allow.Ready() {
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
