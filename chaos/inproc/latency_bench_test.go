package inproc_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

const (
	latencyCount = 2000
	latencyRate  = 500 // msgs/s, paced: latency, not throughput
)

// BenchmarkPublishToReceive compares publish-to-receive latency of
// clientcheck's workload (authenticated, ACL'd, E2E-sealed, through an R3
// room stream) on three membershipd nodes with the same paced workload on
// a plain three-node nats-server cluster (TLS, static nkey user, R3
// SyncAlways stream) started in the same run. It reports both p50/p99 and
// their ratio: the overhead of membershipd's auth, ACL and encryption.
func BenchmarkPublishToReceive(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, _ := clustertest.Inproc(b, inproc.Options{})
	user, _ := identity.Generate()
	nc, err := chaos.DialInternal(c, c.Nodes()[0])
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := kv.NewUsers(js).AddUser(ctx, store.User{SignPub: user.SignPub(), Handle: "bench", Role: identity.RoleMember}); err != nil {
		b.Fatal(err)
	}
	nc.Close()
	time.Sleep(200 * time.Millisecond) // the users watch reaches every node
	t := c.TLS()
	var servers, apis []string
	for _, n := range c.Nodes() {
		servers = append(servers, n.ClientURL())
		apis = append(apis, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
	}

	var mp50, mp99, pp50, pp99 time.Duration
	b.Run("membershipd-clientcheck", func(b *testing.B) {
		for range b.N {
			rep, err := probe.Run(ctx, probe.Config{Servers: servers, APIURLs: apis, CA: t.ClientCA, Cert: t.OperatorCert, Key: t.OperatorKey,
				Identity: user, Count: latencyCount, Rate: latencyRate})
			if err != nil || !rep.OK() || rep.Received != latencyCount {
				b.Fatalf("clientcheck: %v (%+v)", err, rep)
			}
			mp50, mp99 = rep.LatencyP50, rep.LatencyP99
		}
		b.ReportMetric(float64(mp50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(mp99.Microseconds()), "p99-µs")
	})

	plain := startPlainCluster(b, t, user)
	b.Run("plain-nats-cluster", func(b *testing.B) {
		for range b.N {
			pp50, pp99 = plainWorkload(ctx, b, plain, t, user)
		}
		b.ReportMetric(float64(pp50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(pp99.Microseconds()), "p99-µs")
	})
	if pp50 > 0 && pp99 > 0 {
		b.Logf("publish-to-receive: membershipd p50 %s p99 %s; plain nats-server p50 %s p99 %s; ratio p50 %.2fx p99 %.2fx",
			mp50, mp99, pp50, pp99, float64(mp50)/float64(pp50), float64(mp99)/float64(pp99))
	}
}

// startPlainCluster runs three nats-servers with TLS on the client port,
// a static nkey user and JetStream SyncAlways, routed over loopback.
func startPlainCluster(b *testing.B, t chaos.TLSFiles, user *identity.Identity) []*server.Server {
	base, err := chaos.PortBlock(6)
	if err != nil {
		b.Fatal(err)
	}
	var routes []*url.URL
	for i := range 3 {
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", base+3+i))
		routes = append(routes, u)
	}
	var servers []*server.Server
	for i, name := range []string{"p1", "p2", "p3"} {
		tlsCfg, err := pki.ServerTLSConfig(t.ServerCert["n1"], t.ServerKey["n1"], t.ClientCA, true)
		if err != nil {
			b.Fatal(err)
		}
		s, err := server.NewServer(&server.Options{
			ServerName: name, Host: "127.0.0.1", Port: base + i, NoSigs: true, NoLog: true,
			TLSConfig: tlsCfg, TLSVerify: true, TLSTimeout: 2,
			Nkeys:     []*server.NkeyUser{{Nkey: user.NKey()}},
			JetStream: true, StoreDir: b.TempDir(), SyncAlways: true,
			Cluster: server.ClusterOpts{Name: "plain", Host: "127.0.0.1", Port: base + 3 + i, PoolSize: -1},
			Routes:  routes,
		})
		if err != nil {
			b.Fatal(err)
		}
		s.Start()
		servers = append(servers, s)
	}
	b.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	return servers
}

// plainWorkload publishes latencyCount paced messages of the size of a
// sealed room message into an R3 stream while an ordered consumer reads.
func plainWorkload(ctx context.Context, b *testing.B, servers []*server.Server, t chaos.TLSFiles, user *identity.Identity) (p50, p99 time.Duration) {
	clientTLS, err := pki.ClientTLSConfig(t.ClientCA, t.OperatorCert, t.OperatorKey)
	if err != nil {
		b.Fatal(err)
	}
	kp := user.KeyPair()
	nc, err := nats.Connect(servers[0].ClientURL(), nats.Secure(clientTLS), nats.Nkey(user.NKey(), kp.Sign))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	name := "PLAIN_" + strings.ToUpper(rand.Text()[:8])
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3, Storage: jetstream.FileStorage})
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		b.Logf("create plain stream: %v", err)
		time.Sleep(200 * time.Millisecond) // placement needs all three peers
	}
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu    sync.Mutex
		sent  = make([]time.Time, latencyCount)
		lat   []time.Duration
		recvd = make(chan struct{}, latencyCount)
	)
	cons, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var n int
		_, _ = fmt.Sscanf(m.Headers().Get("n"), "%d", &n)
		mu.Lock()
		lat = append(lat, time.Since(sent[n]))
		mu.Unlock()
		recvd <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	body := make([]byte, 330) // a sealed 40-byte payload's envelope size
	tick := time.NewTicker(time.Second / latencyRate)
	defer tick.Stop()
	for n := range latencyCount {
		<-tick.C
		msg := nats.NewMsg(name + ".msg")
		msg.Data = body
		msg.Header.Set("n", fmt.Sprint(n))
		mu.Lock()
		sent[n] = time.Now()
		mu.Unlock()
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s-%d", name, n))); err != nil {
			b.Fatal(err)
		}
	}
	for range latencyCount {
		select {
		case <-recvd:
		case <-ctx.Done():
			b.Fatal("plain workload: not every message received")
		}
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
