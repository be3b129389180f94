// Package history is the record of a nemesis run: every client operation
// with its invoke and complete times, node and outcome, one JSON object per
// line (history.jsonl). Workloads append to it; checkers (chaos/validate)
// judge it; the report draws it. Times are milliseconds since the run's
// base time (the fault Recorder's base), so a history and the fault
// evidence of one run share one clock.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind string

// Operation kinds.
const (
	// Publish: a numbered message published to a room stream with an id.
	// Key is the room stream; Value the message id ("<probe>-<n>").
	Publish Kind = "publish"
	// Receive: a message delivered to a probe's consumer. Key is the room
	// stream, Value the message id, Seq the stream sequence.
	Receive Kind = "receive"
	// UserAdd / UserRevoke / UserGet on the users bucket. Key is the
	// user's sign key (64 hex); UserGet's Value is the status it read
	// ("active", "revoked" or "" for absent).
	UserAdd    Kind = "user-add"
	UserRevoke Kind = "user-revoke"
	UserGet    Kind = "user-get"
	// Connect: a NATS connection attempt. Key and Signer are the
	// identity's sign key, Value its role in the workload ("registered",
	// "unregistered", "revoked", "churn").
	Connect Kind = "connect"
	// Request: a signed control-plane request. Key is "METHOD PATH",
	// Value "replay" for a deliberate replay, else ""; Signer the
	// identity that signed it.
	Request Kind = "request"
	// Health: one /healthz probe. Value is the status code as text.
	Health Kind = "health"
	// Drain: the final read of a room stream after the final heal, one op
	// per stored message (Key the stream, Value the message id, Seq its
	// sequence), then one op with an empty Value that ends the stream's
	// read: ok when the stream was read to its end (or is gone: Error says
	// so), failed when it could not be read. What a drain holds is what the
	// stream kept, whatever was delivered during the run.
	Drain Kind = "drain"
)

// Outcome is how an operation ended.
type Outcome string

// Outcomes. Unknown means the client cannot tell whether the operation
// took effect (a timeout, a lost ack): checkers must treat it as maybe
// applied.
const (
	OK      Outcome = "ok"
	Failed  Outcome = "failed"
	Unknown Outcome = "unknown"
)

// Op is one operation.
type Op struct {
	ID      int64  `json:"id"`
	Process string `json:"process"` // the client (probe, worker) that ran it
	Node    string `json:"node"`    // the node it went to
	Kind    Kind   `json:"kind"`
	Key     string `json:"key,omitempty"`
	Value   string `json:"value,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	// Signer is the sign key (64 hex) of the identity the operation acted
	// as: the connecting identity of a connect, the signer of a request.
	// Empty for operations as the cluster's own identity.
	Signer   string  `json:"signer,omitempty"`
	InvokeMS int64   `json:"invoke_ms"`
	EndMS    int64   `json:"end_ms"`
	Outcome  Outcome `json:"outcome"`
	Error    string  `json:"error,omitempty"`
}

// Recorder appends operations; safe for concurrent use.
type Recorder struct {
	base time.Time
	mu   sync.Mutex
	next int64
	ops  []Op
}

// NewRecorder starts a history whose times count from base.
func NewRecorder(base time.Time) *Recorder { return &Recorder{base: base} }

// Base is the time the offsets count from.
func (r *Recorder) Base() time.Time { return r.base }

// MS converts a wall-clock time to the history's clock.
func (r *Recorder) MS(t time.Time) int64 { return t.Sub(r.base).Milliseconds() }

// Add records a completed operation and returns its id.
func (r *Recorder) Add(op Op) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	op.ID = r.next
	r.ops = append(r.ops, op)
	return op.ID
}

// Ops returns a copy of the history so far, in the order recorded.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Write writes ops as JSON lines.
func Write(w io.Writer, ops []Op) error {
	enc := json.NewEncoder(w)
	for i := range ops {
		if err := enc.Encode(&ops[i]); err != nil {
			return fmt.Errorf("write op %d: %w", ops[i].ID, err)
		}
	}
	return nil
}

// Read reads a history.jsonl file.
func Read(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open history: %w", err)
	}
	defer f.Close()
	var ops []Op
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		ops = append(ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read history %s: %w", path, err)
	}
	return ops, nil
}
