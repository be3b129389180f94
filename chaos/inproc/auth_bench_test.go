package inproc_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// BenchmarkConnectAuth measures a new TLS + nkey connection (connect and
// first round trip) against a membershipd node, whose authenticator checks
// the quorum gate and the KV-fed allowlist, and against a plain nats-server
// with the same TLS and a static nkey user: the difference is what
// membershipd's authentication costs. Reports p50/p99 per connection.
func BenchmarkConnectAuth(b *testing.B) {
	c, _ := clustertest.Inproc(b, inproc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user, err := identity.Generate()
	if err != nil {
		b.Fatal(err)
	}
	n1 := c.Nodes()[0]
	nc, err := chaos.DialInternal(c, n1)
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := kv.NewUsers(js).AddUser(ctx, store.User{SignPub: user.SignPub(), Handle: "bench", Role: identity.RoleMember}); err != nil {
		b.Fatal(err)
	}
	nc.Close()
	// The watch delivers the add to every node within milliseconds.
	for deadline := time.Now().Add(5 * time.Second); ; {
		nc, err := chaos.DialAs(c, n1, user)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	t := c.TLS()
	b.Run("membershipd-kv-allowlist", func(b *testing.B) {
		measure(b, func() (*nats.Conn, error) { return chaos.DialAs(c, n1, user) })
	})

	tlsCfg, err := pki.ServerTLSConfig(t.ServerCert["n1"], t.ServerKey["n1"], t.ClientCA, true)
	if err != nil {
		b.Fatal(err)
	}
	plain, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, TLSConfig: tlsCfg, TLSVerify: true, TLSTimeout: 2,
		Nkeys: []*server.NkeyUser{{Nkey: user.NKey()}},
	})
	if err != nil {
		b.Fatal(err)
	}
	plain.Start()
	defer plain.Shutdown()
	if !plain.ReadyForConnections(5 * time.Second) {
		b.Fatal("plain server not ready")
	}
	clientTLS, err := pki.ClientTLSConfig(t.ClientCA, t.OperatorCert, t.OperatorKey)
	if err != nil {
		b.Fatal(err)
	}
	kp := user.KeyPair()
	b.Run("nats-server-static-nkey", func(b *testing.B) {
		measure(b, func() (*nats.Conn, error) {
			return nats.Connect(plain.ClientURL(), nats.Secure(clientTLS), nats.Nkey(user.NKey(), kp.Sign), nats.NoReconnect())
		})
	})
}

func measure(b *testing.B, dial func() (*nats.Conn, error)) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		nc, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		nc.Close()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*50/100].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
}
