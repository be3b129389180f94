package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Budget is how long the server may work on one request (the handler's
// 5 s plus the 2 s wait for every node's ACL). A client's timeout must be
// longer, or it retries an attempt that is still running.
const Budget = 7 * time.Second

// idemRecord is a mutating request's outcome in UNIBUS_nonces (TTL 10
// min): pending while the first attempt runs, then its answer.
type idemRecord struct {
	Request string          `json:"request"` // sha256 of method, path and body
	Done    bool            `json:"done"`
	Code    int             `json:"code,omitempty"`
	Body    json.RawMessage `json:"body,omitempty"`
	At      time.Time       `json:"at"`
}

// idempotent runs a mutating request once per idempotency key: a retry
// (same key, same method, path and body, new nonce) gets the first
// attempt's answer; a retry while the first attempt still runs gets 409
// "in progress"; a first attempt that failed with a 5xx, or crashed (its
// pending mark older than Budget), is run again. Handlers complete what
// an earlier attempt left half done, so running again is safe.
func (s *Server) idempotent(ctx context.Context, w http.ResponseWriter, sr identity.SignedRequest, r *http.Request, body []byte, run func() (int, any)) {
	sum := sha256.Sum256([]byte(r.Method + "\n" + r.URL.RequestURI() + "\n" + string(body)))
	reqHash := hex.EncodeToString(sum[:])
	ks := sha256.Sum256([]byte(sr.IdempotencyKey))
	key := "i." + sr.SignPub[:16] + "." + hex.EncodeToString(ks[:16])
	b, err := s.d.JS.KeyValue(ctx, kv.NoncesBucket)
	if err != nil {
		code, v := unavailable("idempotency record", err)
		writeJSON(w, code, v)
		return
	}
	pending, _ := json.Marshal(idemRecord{Request: reqHash, At: s.d.Now().UTC()})
	_, err = b.Create(ctx, key, pending)
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := b.Get(ctx, key)
		if gerr != nil {
			code, v := unavailable("idempotency record", gerr)
			writeJSON(w, code, v)
			return
		}
		var prev idemRecord
		_ = json.Unmarshal(e.Value(), &prev)
		switch {
		case prev.Request != reqHash:
			writeJSON(w, http.StatusUnprocessableEntity, Error{Error: "idempotency key already used for a different request"})
			return
		case prev.Done:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("X-Unibus-Idempotent-Replay", "true")
			w.WriteHeader(prev.Code)
			_, _ = w.Write(append(prev.Body, '\n'))
			return
		case s.d.Now().Sub(prev.At) < Budget:
			writeJSON(w, http.StatusConflict, Error{Error: "the first attempt of this request is still running; retry with the same idempotency key"})
			return
		}
		// The first attempt crashed: take over (one taker wins the update).
		_, err = b.Update(ctx, key, pending, e.Revision())
		if err != nil {
			writeJSON(w, http.StatusConflict, Error{Error: "another retry of this request took over; retry with the same idempotency key"})
			return
		}
	} else if err != nil {
		code, v := unavailable("idempotency record", err)
		writeJSON(w, code, v)
		return
	}
	code, v := run()
	raw, _ := json.Marshal(v)
	if code >= 500 {
		// Not an answer: let a retry run again at once.
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.Delete(dctx, key)
		cancel()
	} else {
		done, _ := json.Marshal(idemRecord{Request: reqHash, Done: true, Code: code, Body: raw, At: s.d.Now().UTC()})
		if _, err := b.Put(ctx, key, done); err != nil && s.d.Log != nil {
			s.d.Log.Warn("idempotency result not recorded; a retry runs the request again (it completes, never duplicates)", "err", err)
		}
	}
	writeJSON(w, code, v)
}
