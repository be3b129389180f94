package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
)

// side is one cluster as the steady-state workloads see it: how to
// connect as the user, where to publish, how to seal and open a message
// and how to read the stream back.
type side struct {
	name    string
	dial    func() (*nats.Conn, error) // one connection to the first node, no reconnect
	stream  string
	subject string
	seal    func([]byte) ([]byte, error)
	open    func([]byte) ([]byte, error)
	// consumer reads the stream from its first message.
	consumer func(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error)
	ack      bool // acknowledge each delivery (an explicit-ack consumer)
}

func membershipdSide(m *member) side {
	return side{
		name: "membershipd",
		dial: func() (*nats.Conn, error) { return m.dial(m.c.Nodes()[0]) },
		// The room's stream and subject; messages are E2E sealed as a
		// client of the room seals them, and read through the member's
		// own control-plane-made pull consumer.
		stream: api.RoomStream(m.room.ID), subject: api.RoomSubject(m.room.ID),
		seal: func(p []byte) ([]byte, error) { return e2e.Seal(m.key, m.room.ID, m.id, p) },
		open: func(d []byte) ([]byte, error) { p, _, err := e2e.Open(m.key, m.room.ID, d); return p, err },
		consumer: func(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
			return m.consumer(ctx, js, 1)
		},
		ack: true,
	}
}

// plainSide publishes into a fresh R3 stream created on the plain cluster.
func plainSide(ctx context.Context, dial func() (*nats.Conn, error)) (side, error) {
	name := "PLAIN_" + strings.ToUpper(rand.Text()[:8])
	nc, err := dial()
	if err != nil {
		return side{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return side{}, err
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3,
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return side{}, fmt.Errorf("create plain stream: %w", err)
		case <-time.After(200 * time.Millisecond): // placement needs all three peers
		}
	}
	ident := func(b []byte) ([]byte, error) { return b, nil }
	return side{
		name: "plain", dial: dial, stream: name, subject: name + ".msg", seal: ident, open: ident,
		consumer: func(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
			return js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
		},
	}, nil
}

// connectRate is connects (TLS, auth, first round trip, close) per second
// with workers concurrent clients, total connects in all.
func connectRate(dial func() (*nats.Conn, error), workers, total int) (float64, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) {
				nc, err := dial()
				if err == nil {
					err = nc.Flush()
					nc.Close()
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// latencyRun publishes count messages at rate per second, each plaintext
// of size bytes carrying its number, and returns every message's
// publish-to-receive latency (sorted).
func latencyRun(ctx context.Context, s side, count int, rate float64, size int) ([]time.Duration, error) {
	nc, err := s.dial()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := s.consumer(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("%s consumer: %w", s.name, err)
	}
	run := rand.Text()[:8]
	var (
		mu   sync.Mutex
		sent = make([]time.Time, count)
		lat  = make([]time.Duration, 0, count)
		seen = make([]bool, count)
		done = make(chan struct{})
	)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		now := time.Now()
		if s.ack {
			_ = msg.Ack()
		}
		p, err := s.open(msg.Data())
		if err != nil || len(p) < 8 {
			return
		}
		n := int(binary.BigEndian.Uint64(p))
		mu.Lock()
		defer mu.Unlock()
		if n < 0 || n >= count || seen[n] || sent[n].IsZero() {
			return
		}
		seen[n] = true
		lat = append(lat, now.Sub(sent[n]))
		if len(lat) == count {
			close(done)
		}
	}, jetstream.PullMaxMessages(128))
	if err != nil {
		return nil, fmt.Errorf("%s consume: %w", s.name, err)
	}
	defer cc.Stop()
	start := time.Now()
	for n := range count {
		due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		p := make([]byte, size)
		binary.BigEndian.PutUint64(p, uint64(n))
		data, err := s.seal(p)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		sent[n] = time.Now()
		mu.Unlock()
		m := &nats.Msg{Subject: s.subject, Data: data, Header: nats.Header{}}
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("%s-%d", run, n))); err != nil {
			return nil, fmt.Errorf("%s publish %d: %w", s.name, n, err)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s: %d of %d messages received", s.name, len(lat), count)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	out := slices.Clone(lat)
	slices.Sort(out)
	return out, nil
}

// throughput publishes count messages of size bytes asynchronously (at
// most 256 unacked) and returns acked messages per second.
func throughput(ctx context.Context, s side, count, size int) (float64, error) {
	nc, err := s.dial()
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		return 0, err
	}
	run := rand.Text()[:8]
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, count)
	for n := range count {
		p := make([]byte, size)
		binary.BigEndian.PutUint64(p, uint64(n))
		data, err := s.seal(p)
		if err != nil {
			return 0, err
		}
		m := &nats.Msg{Subject: s.subject, Data: data, Header: nats.Header{}}
		// A full window waits for acks (default: gives up after 200 ms).
		f, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprintf("%s-%d", run, n)), jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return 0, fmt.Errorf("%s publish %d: %w", s.name, n, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("%s: acks still pending after 60 s", s.name)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	elapsed := time.Since(start)
	var errs []error
	for _, f := range futures {
		select {
		case err := <-f.Err():
			errs = append(errs, err)
		default:
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("%s: %d of %d publishes failed: %w", s.name, len(errs), count, errs[0])
	}
	return float64(count) / elapsed.Seconds(), nil
}

// timeEach runs f n times and returns the sorted durations.
func timeEach(n int, f func(i int) error) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := f(i); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t0))
	}
	slices.Sort(out)
	return out, nil
}

// pct is the p-th percentile (0..100) of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}
