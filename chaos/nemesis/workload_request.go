package nemesis

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/unibus/clusterkit/chaos/history"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// requestWorkload sends signed control-plane requests (GET /v1/me and
// /v1/rooms, signed V2: cluster name and nonce) to random nodes, and
// replays some accepted ones byte for byte to a random node: a replay must
// be refused (the nonce is recorded in the replicated nonces bucket).
// Request ops: Key "METHOD PATH", Value "replay" for a replay, Signer the
// signing identity, Error the status and message of a refusal. Most
// requests are signed by the registered identity; some by the revoked one
// and by the users workload's churned keys, so the revocation checker
// judges requests too.
type requestWorkload struct {
	e       *env
	id      *identity.Identity   // registered
	others  []*identity.Identity // revoked, churned
	cluster string
	hc      *http.Client
}

// otherSigners: the share of requests signed by a revoked or churned key.
const otherSigners = 0.3

func newRequestWorkload(e *env, id *identity.Identity, others ...*identity.Identity) (*requestWorkload, error) {
	pool, err := pki.CertPoolFromFile(e.tls.ClientCA)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil}
	return &requestWorkload{e: e, id: id, others: others, hc: &http.Client{Transport: tr, Timeout: api.Budget + 2*time.Second}}, nil
}

// learnCluster reads the public cluster name (signed into every request).
func (w *requestWorkload) learnCluster(ctx context.Context) error {
	var errs []error
	for _, n := range w.e.nodes {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiBase(n)+api.PathCluster, nil)
		if err != nil {
			return err
		}
		resp, err := w.hc.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var ci api.ClusterInfo
		err = json.NewDecoder(resp.Body).Decode(&ci)
		_ = resp.Body.Close()
		if err == nil && ci.Cluster != "" {
			w.cluster = ci.Cluster
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %d %v", n.Name(), resp.StatusCode, err))
	}
	return fmt.Errorf("learn the cluster name: %v", errs)
}

func (w *requestWorkload) start(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := w.e.rng(500)
		paths := []string{api.PathMe, api.PathRooms}
		for jitter(ctx, rng, 150*time.Millisecond, 400*time.Millisecond) {
			path := paths[rng.IntN(len(paths))]
			n := w.e.nodes[rng.IntN(len(w.e.nodes))]
			req, err := http.NewRequest(http.MethodGet, apiBase(n)+path, nil)
			if err != nil {
				return
			}
			req.Header.Set(identity.HeaderCluster, w.cluster)
			signer := w.id
			if len(w.others) > 0 && rng.Float64() < otherSigners {
				signer = w.others[rng.IntN(len(w.others))]
			}
			if err := identity.SignRequest(req, nil, signer, time.Now()); err != nil {
				w.e.log.Error("sign request", "err", err)
				return
			}
			code := w.send(ctx, req, n.Name(), "", signer.SignPub())
			if ctx.Err() != nil {
				return
			}
			// Replay only accepted requests: a refused one never recorded
			// its nonce, so its replay may rightly be served.
			if code/100 == 2 && rng.Float64() < 0.35 {
				m := w.e.nodes[rng.IntN(len(w.e.nodes))]
				again := req.Clone(ctx)
				again.URL.Host, again.Host = hostOf(apiBase(m)), ""
				w.send(ctx, again, m.Name(), "replay", signer.SignPub())
			}
		}
	}()
}

// send sends req and records it; the status code (0: no answer).
func (w *requestWorkload) send(ctx context.Context, req *http.Request, node, value, signer string) int {
	req = req.WithContext(ctx)
	op := history.Op{Process: "requests", Node: node, Kind: history.Request, Key: req.Method + " " + req.URL.Path, Value: value, Signer: signer}
	t0 := time.Now()
	resp, err := w.hc.Do(req)
	if err != nil {
		// The node may have recorded the nonce and served it.
		op.Outcome, op.Error = history.Unknown, errText(err)
		w.e.record(op, t0, time.Now())
		return 0
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		op.Outcome = history.OK
	} else {
		op.Outcome = history.Failed
		op.Error = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	w.e.record(op, t0, time.Now())
	return resp.StatusCode
}

func hostOf(base string) string {
	const p = "https://"
	if len(base) > len(p) {
		return base[len(p):]
	}
	return base
}
