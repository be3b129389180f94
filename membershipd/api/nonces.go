package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/unibus/clusterkit/membershipd/identity"
)

// Failover nonces: the consumer endpoint's nonce when the replicated nonces
// bucket cannot take it.
//
// A client's failover runs through the consumer endpoint (a reset to the
// first stream sequence it has not received) while the killed node's raft
// groups elect new leaders; if the node led the nonces bucket, every
// signed request waits out that bucket's election, 4-9 s of its own on
// top of the room stream's. For this endpoint alone a nonce the bucket
// cannot record within failoverNonceWait is accepted on the strength of
// the node's own nonce cache. Why that is safe: the request is still
// verified (signature, cluster, timestamp window, an active caller) and
// the node still refuses a nonce it has seen; what a replay to another
// node can do is what the signed request itself says, for its signer
// only: (re)start the signer's own consumer at the sequence in the signed
// body. The client drops what it has seen (it hands on each stream
// sequence once), resets are rate-limited per consumer and node
// (minResetInterval), and the timestamp window ends any replay after
// Window. The bucket is still asked first, so while it has a leader a
// replay is refused on every node. Every other endpoint waits for the
// bucket and fails closed (503).
const (
	// failoverNonceWait bounds the bucket's create for the consumer
	// endpoint: a live leader records a nonce in milliseconds.
	failoverNonceWait = 100 * time.Millisecond
	// maxLocalNonces bounds the node's cache; when full, the bucket alone
	// decides (fail closed) until entries expire.
	maxLocalNonces = 1 << 16
)

// localNonces is the node's own record of the nonces it accepted on the
// consumer endpoint, kept for MinNonceTTL (the timestamp window on both
// sides, with clock skew).
type localNonces struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

var errLocalNoncesFull = errors.New("the node's nonce cache is full")

// add records key at now; false if it was seen within MinNonceTTL.
func (l *localNonces) add(key string, now time.Time) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]time.Time{}
	}
	if t, ok := l.seen[key]; ok && now.Sub(t) < MinNonceTTL {
		return false, nil
	}
	if len(l.seen) >= maxLocalNonces {
		for k, t := range l.seen {
			if now.Sub(t) >= MinNonceTTL {
				delete(l.seen, k)
			}
		}
		if len(l.seen) >= maxLocalNonces {
			return false, errLocalNoncesFull
		}
	}
	l.seen[key] = now
	return true, nil
}

// recordFailoverNonce is the consumer endpoint's nonce check (see above):
// the node's cache refuses a nonce it has seen, then the bucket is asked
// for failoverNonceWait; a replay there is refused, a bucket that does not
// answer in time leaves the node's cache to decide.
func (s *Server) recordFailoverNonce(ctx context.Context, sr identity.SignedRequest) (int, error) {
	key := "n." + sr.SignPub[:16] + "." + sr.Nonce
	fresh, err := s.nonces.add(key, s.d.Now())
	if err != nil {
		return s.recordNonce(ctx, sr) // the bucket alone decides
	}
	if !fresh {
		return http.StatusConflict, errReplay
	}
	nctx, cancel := context.WithTimeout(ctx, failoverNonceWait)
	code, err := s.recordNonce(nctx, sr)
	cancel()
	switch {
	case err == nil:
		return 0, nil
	case errors.Is(err, errReplay):
		return code, err
	case ctx.Err() != nil:
		return http.StatusServiceUnavailable, fmt.Errorf("record the request nonce: %w", ctx.Err())
	}
	if s.d.Log != nil {
		s.d.Log.Info("consumer request: the nonces bucket did not answer in time; the nonce is recorded on this node only", "wait", failoverNonceWait, "err", err)
	}
	return 0, nil
}

// nonceGate is a failover request's nonce check, running beside its
// handler (see signedWith).
type nonceGate struct {
	done chan struct{}
	code int
	err  error
}

type nonceGateKey struct{}

func (g *nonceGate) wait(ctx context.Context) (int, error) {
	select { // a check that is done decides, whatever ctx says
	case <-g.done:
		return g.code, g.err
	default:
	}
	select {
	case <-g.done:
		return g.code, g.err
	case <-ctx.Done():
		return http.StatusServiceUnavailable, fmt.Errorf("record the request nonce: %w", ctx.Err())
	}
}

// nonceChecked waits for the request's nonce check, if it runs beside the
// handler: a handler calls it before it changes anything, so a replay
// changes nothing. A non-zero code is the refusal to answer.
func nonceChecked(ctx context.Context) (int, any) {
	g, _ := ctx.Value(nonceGateKey{}).(*nonceGate)
	if g == nil {
		return 0, nil
	}
	if code, err := g.wait(ctx); err != nil {
		return code, Error{Error: err.Error()}
	}
	return 0, nil
}
