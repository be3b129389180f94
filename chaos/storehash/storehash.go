// Package storehash reads what one node's JetStream store holds, message by
// message, without the cluster: the store (a copy of it) is opened by an
// embedded standalone nats-server in this process, and every stream is read
// back and hashed. Comparing the hashes of every node's store tells whether
// the replicas hold the same messages, not only the same counts and
// sequences (nats-server keeps no per-replica content hash, and a read
// through the cluster only ever sees the leader's copy).
//
// On disk (nats-server 2.15.2) streams live under
// <store>/jetstream/<account>/streams/<name>/ whether written standalone or
// clustered, with the raft state apart in $SYS/_js_. A standalone server
// does not recover a clustered stream as it is: its meta.inf says
// num_replicas 3 and single-server mode refuses that
// (JSStreamReplicasNotSupportedErr, logged, the stream skipped). So the
// copy is made standalone: the raft state and the consumers are left out,
// each stream's meta.inf is rewritten to one replica (and no age limit)
// and its meta.sum recomputed (HighwayHash-64 keyed with SHA-256 of the stream name, as the
// server does). The message blocks are copied untouched: what is read is
// this replica's own data. The nodes must be stopped: a live store is not
// a consistent copy.
package storehash

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/minio/highwayhash"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is one stream as one store holds it.
type Stream struct {
	Name     string `json:"name"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Msgs     uint64 `json:"msgs"`
	// Hash is hex SHA-256 over every message in sequence order: its
	// sequence, subject, headers (keys sorted, values in order) and data,
	// each length-prefixed. Equal hashes: the same messages at the same
	// sequences.
	Hash string `json:"hash"`
	// Unreadable: the stream's dir is in the store but its meta.inf is
	// not a stream config (a power loss can leave it empty): nats-server
	// would not recover it either. Nothing else is set then.
	Unreadable string `json:"unreadable,omitempty"`
}

// ReadCopy copies the streams of a store dir (a node's --nats-store,
// holding jetstream/) to a temporary dir, makes them standalone streams,
// reads every one with an embedded standalone server and removes the copy:
// the node's own store is never touched. skip leaves streams out (nil:
// none).
func ReadCopy(ctx context.Context, storeDir string, skip func(stream string) bool) ([]Stream, error) {
	tmp, err := os.MkdirTemp("", "storehash-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	bad, err := copyStreams(storeDir, tmp, skip)
	if err != nil {
		return nil, fmt.Errorf("copy store %s: %w", storeDir, err)
	}
	out, err := read(ctx, tmp, skip)
	out = append(out, bad...)
	slices.SortFunc(out, func(a, b Stream) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

// read opens storeDir with an embedded standalone JetStream server (no
// listener: an in-process connection) and reads every stream of the
// global account.
func read(ctx context.Context, storeDir string, skip func(stream string) bool) ([]Stream, error) {
	if _, err := os.Stat(filepath.Join(storeDir, "jetstream")); err != nil {
		return nil, fmt.Errorf("store %s: %w", storeDir, err)
	}
	s, err := server.NewServer(&server.Options{ServerName: "storehash", DontListen: true, JetStream: true,
		StoreDir: storeDir, NoSigs: true, NoLog: true, JetStreamMaxMemory: 64 << 20})
	if err != nil {
		return nil, fmt.Errorf("embedded server on %s: %w", storeDir, err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(30 * time.Second) {
		return nil, fmt.Errorf("embedded server on %s: not ready in 30s", storeDir)
	}
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		return nil, fmt.Errorf("connect to the embedded server: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var names []string
	lister := js.StreamNames(ctx)
	for n := range lister.Name() {
		names = append(names, n)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list streams of %s: %w", storeDir, err)
	}
	slices.Sort(names)
	var out []Stream
	for _, name := range names {
		if skip != nil && skip(name) {
			continue
		}
		st, err := readStream(ctx, js, name)
		if err != nil {
			return out, fmt.Errorf("store %s: %w", storeDir, err)
		}
		out = append(out, st)
	}
	return out, nil
}

// readStream reads every message of one stream with an ordered consumer.
func readStream(ctx context.Context, js jetstream.JetStream, name string) (Stream, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return Stream{}, fmt.Errorf("stream %s: %w", name, err)
	}
	info := s.CachedInfo().State
	st := Stream{Name: name, FirstSeq: info.FirstSeq, LastSeq: info.LastSeq, Msgs: info.Msgs}
	h := newHash()
	if info.Msgs == 0 {
		st.Hash = hex.EncodeToString(h.Sum(nil))
		return st, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return st, fmt.Errorf("stream %s: consumer: %w", name, err)
	}
	var got uint64
	for got < info.Msgs {
		// Ask for exactly what is left: a fetch for more than the stream
		// holds waits out its whole MaxWait.
		batch, err := cons.Fetch(int(min(1000, info.Msgs-got)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return st, fmt.Errorf("stream %s: fetch: %w", name, err)
		}
		n := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return st, fmt.Errorf("stream %s: metadata: %w", name, err)
			}
			hashMsg(h, md.Sequence.Stream, m.Subject(), m.Headers(), m.Data())
			got++
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return st, fmt.Errorf("stream %s: fetch: %w", name, err)
		}
		if n == 0 {
			return st, fmt.Errorf("stream %s: read %d of %d messages, then nothing", name, got, info.Msgs)
		}
	}
	st.Hash = hex.EncodeToString(h.Sum(nil))
	return st, nil
}

// newHash is the hash every store is read with.
func newHash() hash.Hash { return sha256.New() }

// hashMsg adds one message to h: every field length-prefixed, so no two
// different messages feed the same bytes.
func hashMsg(h hash.Hash, seq uint64, subject string, hdr nats.Header, data []byte) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	h.Write(b[:])
	field := func(p []byte) {
		binary.BigEndian.PutUint64(b[:], uint64(len(p)))
		h.Write(b[:])
		h.Write(p)
	}
	field([]byte(subject))
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	binary.BigEndian.PutUint64(b[:], uint64(len(keys)))
	h.Write(b[:])
	for _, k := range keys {
		field([]byte(k))
		binary.BigEndian.PutUint64(b[:], uint64(len(hdr[k])))
		h.Write(b[:])
		for _, v := range hdr[k] {
			field([]byte(v))
		}
	}
	field(data)
}

// copyStreams copies every stream dir of src's global account ($G: the
// daemon has no other) into dst without its consumers, and makes each an
// R1 stream (see the package comment). A stream whose meta.inf is not a
// config is left out and returned as Unreadable.
func copyStreams(src, dst string, skip func(string) bool) ([]Stream, error) {
	rel := filepath.Join("jetstream", "$G", "streams")
	ents, err := os.ReadDir(filepath.Join(src, rel))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dst, rel), 0o700); err != nil {
		return nil, err
	}
	var bad []Stream
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") || skip != nil && skip(name) {
			continue // "." marks a stream being deleted
		}
		from, to := filepath.Join(src, rel, name), filepath.Join(dst, rel, name)
		if err := copyTree(from, to, "obs"); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(to, "obs"), 0o700); err != nil {
			return nil, err
		}
		if err := standalone(to, name); err != nil {
			var se *json.SyntaxError
			if !errors.As(err, &se) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("stream %s: %w", name, err)
			}
			bad = append(bad, Stream{Name: name, Unreadable: err.Error()})
			if err := os.RemoveAll(to); err != nil {
				return nil, err
			}
		}
	}
	return bad, nil
}

// standalone rewrites a stream dir's meta.inf to one replica and no age
// limit, and its meta.sum to match.
func standalone(dir, name string) error {
	meta := filepath.Join(dir, "meta.inf")
	b, err := os.ReadFile(meta)
	if err != nil {
		return err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("meta.inf: %w", err)
	}
	cfg["num_replicas"] = json.RawMessage("1")
	// No expiry in the copy: the nodes are read one after another, and
	// an age limit passing between two reads would look like divergence.
	cfg["max_age"] = json.RawMessage("0")
	if b, err = json.Marshal(cfg); err != nil {
		return err
	}
	key := sha256.Sum256([]byte(name))
	hh, err := highwayhash.NewDigest64(key[:])
	if err != nil {
		return err
	}
	hh.Write(b)
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "meta.sum"), []byte(hex.EncodeToString(hh.Sum(nil))), 0o600)
}

// copyTree copies the directories and regular files of src into dst,
// leaving out the top-level entries named in skip.
func copyTree(src, dst string, skip ...string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if slices.Contains(skip, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o700)
		case d.Type().IsRegular():
			return copyFile(p, target)
		}
		return nil // links, sockets: not part of a store
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
