package specs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/check"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// Runbook section "Chaos test" under load: many registered clients
// connected at once, steady E2E traffic in many rooms, and one node
// SIGKILLed (membershipd processes, a real crash: no raft step-down).
// unansweredBudget bounds how long the healthy majority's /healthz may go
// unanswered (timeouts, never a 503) during the reconnect storm.
const unansweredBudget = 3 * time.Second

var _ = Describe("Chaos: one node killed under load", Ordered, func() {
	const (
		clients    = 500
		rooms      = 20
		perRoomHz  = 5 // messages per second per room
		steady     = 5 * time.Second
		after      = 5 * time.Second
		readmitMax = 60 * time.Second // the claim's deadline, with margin for 2 cores
	)
	var (
		env    *Env
		ids    []*identity.Identity // ids[:rooms] own one room each
		roomOf []api.Room
		keyOf  [][]byte
	)

	BeforeAll(func(ctx SpecContext) {
		if *flagTarget != "process" {
			Skip("needs membershipd processes (a real SIGKILL, 500 clients): --target=process, as make chaos runs it")
		}
		env = NewEnv("load-failover", chaos.ClusterSpec{})
		env.StartAll(ctx)

		// Register every client through the KV with node 1's internal
		// identity, 16 at a time (the CLI would cost a process per user).
		nc, err := chaos.DialInternal(env.Cluster, env.Cluster.Nodes()[0])
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(nc.Close)
		js, err := jetstream.New(nc)
		Expect(err).NotTo(HaveOccurred())
		users := kv.NewUsers(js)
		ids = make([]*identity.Identity, clients)
		for i := range ids {
			ids[i], err = identity.Generate()
			Expect(err).NotTo(HaveOccurred())
		}
		t0 := time.Now()
		Expect(forEach(ctx, clients, 16, func(ctx context.Context, i int) error {
			_, err := users.AddUser(ctx, store.User{SignPub: ids[i].SignPub(), Handle: SpecHandle("load-" + strconv.Itoa(i)), Role: identity.RoleMember})
			return err
		})).To(Succeed())
		AddReportEntry("load-failover: register 500 users through the KV (16 at a time)", time.Since(t0).Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)

		// One room per owner, created as a client does (signed key).
		roomOf, keyOf = make([]api.Room, rooms), make([][]byte, rooms)
		Expect(forEach(ctx, rooms, 4, func(ctx context.Context, i int) error {
			idem, req, key, err := probe.NewRoomRequest(ids[i], "spec-load-"+randomHex(4))
			if err != nil {
				return err
			}
			a, err := probe.NewAPI(apiBases(env), env.Cluster.TLS().ClientCA, ids[i])
			if err != nil {
				return err
			}
			defer a.CloseIdle()
			var room api.Room
			for attempt := 0; ; attempt++ {
				if room, err = a.CreateRoom(ctx, idem, req); err == nil || attempt == 20 || ctx.Err() != nil {
					break
				}
				time.Sleep(250 * time.Millisecond) // a user just added may not be admitted everywhere yet
			}
			roomOf[i], keyOf[i] = room, key
			return err
		})).To(Succeed())
	})

	It("admits every client again after a node is killed, loses no acked message and never denies the healthy majority",
		Claim("claim:load-failover"), Fault, Disruptive, Slow, func(ctx SpecContext) {
			DeferCleanup(env.RestartStopped, NodeTimeout(restartBudget+30*time.Second))
			nodes := env.Cluster.Nodes()
			cpu := cpuSeconds(env.Dir, nil)
			wall0 := time.Now()

			// Connect every client (16 TLS handshakes at a time).
			conns := make([]*loadClient, clients)
			t0 := time.Now()
			Expect(forEach(ctx, clients, 16, func(ctx context.Context, i int) error {
				c, err := dialLoadClient(ctx, env, ids[i])
				conns[i] = c
				return err
			})).To(Succeed())
			connectTook := time.Since(t0)
			DeferCleanup(func() {
				for _, c := range conns {
					if c != nil {
						c.nc.Close()
					}
				}
			})

			w := env.Health.Watch(ctx, 100*time.Millisecond, nodes...)
			watchStart := time.Now()
			stopped := false
			DeferCleanup(func() {
				if !stopped {
					w.Stop()
				}
			})

			// Steady traffic: each room's owner publishes perRoomHz
			// sealed messages a second, each retried with its message id
			// until acked.
			pctx, stopPub := context.WithCancel(ctx)
			var pubs sync.WaitGroup
			acked := make([]map[uint64]string, rooms) // stream sequence -> message id
			for i := 0; i < rooms; i++ {
				acked[i] = map[uint64]string{}
				pubs.Add(1)
				go func() {
					defer GinkgoRecover()
					defer pubs.Done()
					publishSteady(pctx, conns[i], roomOf[i], keyOf[i], perRoomHz, acked[i])
				}()
			}
			DeferCleanup(func() { stopPub(); pubs.Wait() })
			time.Sleep(steady)

			// Kill the node serving the most clients.
			count := map[string]int{}
			for _, c := range conns {
				count[c.nc.ConnectedServerName()]++
			}
			var victim chaos.Node
			for _, n := range nodes {
				if victim == nil || count[n.Name()] > count[victim.Name()] {
					victim = n
				}
			}
			var onVictim []*loadClient
			for _, c := range conns {
				if c.nc.ConnectedServerName() == victim.Name() {
					onVictim = append(onVictim, c)
				}
			}
			killer, ok := victim.(chaos.Killer)
			Expect(ok).To(BeTrue(), "the process target's nodes can be killed")
			cpu = cpuSeconds(env.Dir, cpu) // the victim's share up to its death
			killedAt := time.Now()
			Expect(killer.Kill(ctx, 0)).To(Succeed())

			// Every client of the victim reconnects to a survivor and is
			// admitted again (its reconnect is accepted by authentication).
			var readmitted time.Duration
			Eventually(func(g Gomega) {
				last := time.Time{}
				for _, c := range onVictim {
					at := c.reconnectedAfter(killedAt)
					g.Expect(at.IsZero()).To(BeFalse(), "client %s not re-admitted yet (status %v)", c.name, c.nc.Status())
					if at.After(last) {
						last = at
					}
				}
				readmitted = last.Sub(killedAt)
			}).WithContext(ctx).WithTimeout(readmitMax).WithPolling(100 * time.Millisecond).Should(Succeed())
			time.Sleep(after)
			stopPub()
			pubs.Wait()
			tls := w.Stop()
			stopped = true
			span := time.Since(watchStart) - time.Second
			cpu = cpuSeconds(env.Dir, cpu)
			wall1 := time.Now()
			self := selfCPU()

			// Every client still authorized: a round trip on each.
			var notOK atomic.Int32
			Expect(forEach(ctx, clients, 32, func(_ context.Context, i int) error {
				if err := conns[i].nc.FlushTimeout(5 * time.Second); err != nil {
					notOK.Add(1)
					return fmt.Errorf("client %s: %w", conns[i].name, err)
				}
				if conns[i].nc.ConnectedServerName() == victim.Name() {
					return fmt.Errorf("client %s still on the killed node", conns[i].name)
				}
				return nil
			})).To(Succeed())

			// Zero acked loss: every acked sequence holds its message.
			survivor := Others(env.Cluster, victim)[0]
			inc, err := chaos.DialInternal(env.Cluster, survivor)
			Expect(err).NotTo(HaveOccurred())
			defer inc.Close()
			ijs, err := jetstream.New(inc)
			Expect(err).NotTo(HaveOccurred())
			total, lost := 0, 0
			for i := 0; i < rooms; i++ {
				// Streams the victim led elect a new leader first (raft
				// election timeout: 4-9 s).
				var st jetstream.Stream
				Eventually(func() error {
					st, err = ijs.Stream(ctx, roomOf[i].Stream)
					return err
				}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
				for seq, id := range acked[i] {
					total++
					var m *jetstream.RawStreamMsg
					for attempt := 0; attempt < 5; attempt++ {
						if m, err = st.GetMsg(ctx, seq); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
							break
						}
					}
					if err != nil || m.Header.Get(jetstream.MsgIDHeader) != id {
						lost++
						GinkgoWriter.Printf("room %s seq %d (%s): %v\n", roomOf[i].ID, seq, id, err)
					}
				}
			}

			// The claim is about the gate's answers: a 503 fails at once. A
			// probe the saturated machine (500 clients reconnecting through
			// TLS) does not answer in time is no denial; those may add up
			// to unansweredBudget.
			for _, n := range Others(env.Cluster, victim) {
				ExpectPass(check.NeverDenied(chaos.Of(tls, n.Name()), span, unansweredBudget))
			}
			Expect(total).To(BeNumerically(">", int(float64(rooms*perRoomHz)*(steady+after).Seconds()/2)), "steady traffic was acked")
			Expect(lost).To(BeZero(), "acked messages missing after the kill")

			gaps := make([]time.Duration, 0, len(onVictim))
			for _, c := range onVictim {
				gaps = append(gaps, c.reconnectedAfter(killedAt).Sub(killedAt))
			}
			slices.Sort(gaps)
			AddReportEntry("load-failover: time until every client is re-admitted", readmitted.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			AddReportEntry("load-failover: clients on the killed node / re-admission p50, p99", fmt.Sprintf("%d / %s, %s", len(gaps),
				gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)*99/100].Round(time.Millisecond)), ReportEntryVisibilityFailureOrVerbose)
			AddReportEntry("load-failover: acked / lost", fmt.Sprintf("%d / %d", total, lost), ReportEntryVisibilityFailureOrVerbose)
			AddReportEntry("load-failover: connect 500 clients (16 at a time)", connectTook.Round(time.Millisecond).String(), ReportEntryVisibilityFailureOrVerbose)
			wall := wall1.Sub(wall0).Seconds()
			AddReportEntry("load-failover: CPU during the run (nodes, spec process incl. clients; wall; cores)",
				fmt.Sprintf("%.1f s, %.1f s; %.1f s; %d; loadavg %s", cpu.used(), self, wall, runtime.NumCPU(), loadavg()), ReportEntryVisibilityFailureOrVerbose)
		})
})

func apiBases(env *Env) []string {
	var out []string
	for _, n := range env.Cluster.Nodes() {
		out = append(out, apiBase(n))
	}
	return out
}

// forEach runs f(i) for i in [0, n) on width goroutines; the first error
// wins.
func forEach(ctx context.Context, n, width int, f func(context.Context, int) error) error {
	var (
		next  atomic.Int64
		first error
		once  sync.Once
		wg    sync.WaitGroup
	)
	for w := 0; w < width; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// loadClient is one connected member, with its reconnect times.
type loadClient struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	id   *identity.Identity
	mu   sync.Mutex
	recs []time.Time
}

// reconnectedAfter is the first reconnect after t (zero if none yet).
func (c *loadClient) reconnectedAfter(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.recs {
		if r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// dialLoadClient connects id to every node (nats.go picks one at random)
// with reconnects as clientcheck makes them, retrying while the user is
// not admitted yet.
func dialLoadClient(ctx context.Context, env *Env, id *identity.Identity) (*loadClient, error) {
	t := env.Cluster.TLS()
	tlsCfg, err := pki.ClientTLSConfig(t.ClientCA, t.OperatorCert, t.OperatorKey)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, n := range env.Cluster.Nodes() {
		urls = append(urls, n.ClientURL())
	}
	c := &loadClient{name: id.SignPub()[:8], id: id}
	kp := id.KeyPair()
	for attempt := 0; ; attempt++ {
		c.nc, err = nats.Connect(strings.Join(urls, ","), nats.Secure(tlsCfg), nats.Nkey(id.NKey(), kp.Sign),
			nats.CustomInboxPrefix(authn.InboxPrefix(id.SignPub())), nats.Name("spec-load"),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
			nats.Timeout(3*time.Second), nats.IgnoreAuthErrorAbort(),
			nats.ReconnectHandler(func(*nats.Conn) {
				c.mu.Lock()
				c.recs = append(c.recs, time.Now())
				c.mu.Unlock()
			}))
		if err == nil || attempt == 20 || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("client %s: %w", c.name, err)
	}
	c.js, err = jetstream.New(c.nc)
	return c, err
}

// publishSteady publishes hz sealed messages a second into room until ctx
// ends, each retried with its message id until acked; acked records each
// acked stream sequence with its id.
func publishSteady(ctx context.Context, c *loadClient, room api.Room, key []byte, hz int, acked map[uint64]string) {
	tick := time.NewTicker(time.Second / time.Duration(hz))
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sealed, err := e2e.Seal(key, room.ID, c.id, []byte(fmt.Sprintf(`{"n":%d}`, n)))
		if err != nil {
			return
		}
		id := fmt.Sprintf("%s-%d", room.ID, n)
		for ctx.Err() == nil {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := c.js.Publish(actx, room.Subject, sealed, jetstream.WithMsgID(id), jetstream.WithExpectStream(room.Stream))
			cancel()
			if err == nil {
				acked[ack.Sequence] = id
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// cpuSample is the user+system CPU seconds of each node process: first
// and last seen.
type cpuSample map[string][2]float64

// used is the CPU the processes used between their first and last sample.
func (c cpuSample) used() float64 {
	t := 0.0
	for _, v := range c {
		t += v[1] - v[0]
	}
	return t
}

// cpuSeconds samples the CPU of every process whose command line names dir
// (the cluster's node processes) into prev (nil starts a new sample).
func cpuSeconds(dir string, prev cpuSample) cpuSample {
	if prev == nil {
		prev = cpuSample{}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), dir) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces).
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			v, ok := prev[e.Name()]
			if !ok {
				v[0] = (u + s) / 100 // USER_HZ
			}
			v[1] = (u + s) / 100
			prev[e.Name()] = v
		}
	}
	return prev
}

// selfCPU is this process's user+system CPU so far (the spec and its 500
// clients).
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
