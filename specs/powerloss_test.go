package specs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/membershipd/identity"
)

// Runbook section "Durability": an acknowledged write survives a power
// loss of the whole cluster. The power-loss fault drops every write a node
// did not fsync (kill -9 alone keeps the page cache, so it cannot see a
// missing fsync); the negative control runs the same workload with
// nats-server's default sync interval and must find the acked writes it
// lost, or the fault and the checker prove nothing.
var _ = Describe("Durability: power loss of every node", func() {
	It("keeps every acked message and every acked user add on every node (--sync always)",
		Claim("claim:power-loss-durable"), Fault, Disruptive, Slow, SpecTimeout(5*time.Minute), func(ctx SpecContext) {
			res := powerLossRun(ctx, "always")
			Expect(res.lostMsgs).To(BeEmpty(), "acked messages lost after power loss, per node")
			Expect(res.lostUsers).To(BeEmpty(), "acked user adds lost after power loss, per node")
		})

	It("negative control: with --sync default the same run reports the acked writes it lost",
		Claim("claim:power-loss-durable"), Fault, Disruptive, Slow, SpecTimeout(5*time.Minute), func(ctx SpecContext) {
			res := powerLossRun(ctx, "default")
			Expect(res.lostMsgs).NotTo(BeEmpty(), "default sync lost no acked message on any node: the fault or the checker is not real")
		})
})

// powerLossResult is one run's outcome: what was acked, and per node what
// of it is missing after the power came back.
type powerLossResult struct {
	Sync       string              `json:"sync"`
	AckedMsgs  int                 `json:"acked_msgs"`
	AckedUsers []string            `json:"acked_users"`
	FailedAdds int                 `json:"failed_adds"`
	LostMsgs   map[string][]string `json:"lost_msgs"`  // node → acked ids it cannot read back
	LostUsers  map[string][]string `json:"lost_users"` // node → acked sign keys its user list lacks
	lostMsgs   map[string][]string // only the nodes that lost something
	lostUsers  map[string][]string
}

// powerStream is the R3 file stream the publisher writes to.
const powerStream = "POWERLOSS"

// powerLossRun starts a fresh cluster with every store on a power-loss
// mount and JetStream's fsync mode syncMode, publishes to an R3 stream (acks
// recorded) while the CLI adds users (acked = exit 0), cuts the power of
// every node in the middle of both, and after the restart checks every
// acked write on every node: messages read back with that node as the
// connection's server, users in that node's own user list.
func powerLossRun(ctx context.Context, syncMode string) powerLossResult {
	GinkgoHelper()
	env := NewEnv("powerloss-"+syncMode, chaos.ClusterSpec{PowerLoss: true, Sync: syncMode})
	f, err := fault.Lookup("power-loss")
	Expect(err).NotTo(HaveOccurred())
	if err := f.Available(env.Cluster, fault.Args{}); err != nil {
		Skip(err.Error())
	}
	env.StartAll(ctx)
	runner := fault.NewRunner(env.Cluster, nil)
	DeferCleanup(func() { Evidence("fault-injections", runner.Recorder()) })

	nodes := env.Cluster.Nodes()
	nc, err := chaos.DialInternal(env.Cluster, nodes[0])
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: powerStream, Subjects: []string{"powerloss.>"},
			Replicas: min(3, len(nodes)), Storage: jetstream.FileStorage})
		return err
	}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

	var (
		mu         sync.Mutex
		ackedMsgs  = map[string]bool{}
		ackedUsers []string
		failedAdds int
	)
	// Cut somewhere in the middle: after 1000-2000 acked messages and at
	// least 3 acked user adds, with both still going.
	cutMsgs := 1000 + rand.IntN(1000)
	cutNow := make(chan struct{})
	var once sync.Once
	maybeCut := func() {
		if len(ackedMsgs) >= cutMsgs && len(ackedUsers) >= 3 {
			once.Do(func() { close(cutNow) })
		}
	}
	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the publisher: 1 in 10 synchronous, the rest async
		defer GinkgoRecover()
		defer wg.Done()
		for i := 0; wctx.Err() == nil; i++ {
			id := fmt.Sprintf("m-%07d", i)
			msg := &nats.Msg{Subject: "powerloss.x", Data: []byte(id), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, id)
			ack := func() {
				mu.Lock()
				ackedMsgs[id] = true
				maybeCut()
				mu.Unlock()
			}
			if i%10 == 0 {
				pctx, cancel := context.WithTimeout(wctx, 5*time.Second)
				_, err := js.PublishMsg(pctx, msg)
				cancel()
				if err != nil {
					return // the power is gone
				}
				ack()
				continue
			}
			fut, err := js.PublishMsgAsync(msg)
			if err != nil {
				return
			}
			go func() {
				select {
				case <-fut.Ok():
					ack()
				case <-fut.Err():
				case <-ctx.Done():
				}
			}()
		}
	}()
	for w := range 2 { // two operators adding users, on different nodes
		wg.Add(1)
		go func() {
			defer GinkgoRecover()
			defer wg.Done()
			for i := 0; wctx.Err() == nil; i++ {
				id, err := identity.Generate()
				Expect(err).NotTo(HaveOccurred())
				n := nodes[(w+i)%len(nodes)]
				r, err := env.Cluster.CLI(ctx, n, "user", "add", "--store", "kv", "--handle", SpecHandle(fmt.Sprintf("power-%d-%d", w, i)),
					"--role", string(identity.RoleMember), "--sign-pub", id.SignPub())
				mu.Lock()
				if err == nil && r.ExitCode == 0 {
					ackedUsers = append(ackedUsers, id.SignPub())
					maybeCut()
				} else {
					failedAdds++
				}
				mu.Unlock()
			}
		}()
	}

	select {
	case <-cutNow:
	case <-time.After(2 * time.Minute):
		stopWork()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		Fail(fmt.Sprintf("the workload never reached the cut point (%d messages, %d users acked)", len(ackedMsgs), len(ackedUsers)))
	}
	t0 := time.Now()
	act, err := fault.InjectFor(ctx, runner, DeferCleanup, "power-loss", fault.Args{})
	Expect(err).NotTo(HaveOccurred())
	restarted := time.Since(t0)
	stopWork()
	nc.Close()
	wg.Wait()
	observed := observePower(ctx, act)
	healed := healPower(ctx, act)

	mu.Lock()
	res := powerLossResult{Sync: syncMode, AckedMsgs: len(ackedMsgs), AckedUsers: slices.Clone(ackedUsers), FailedAdds: failedAdds,
		LostMsgs: map[string][]string{}, LostUsers: map[string][]string{}, lostMsgs: map[string][]string{}, lostUsers: map[string][]string{}}
	ids := make([]string, 0, len(ackedMsgs))
	for id := range ackedMsgs {
		ids = append(ids, id)
	}
	mu.Unlock()
	slices.Sort(ids)

	By("every acked write, on every node")
	patience := 8 * time.Second
	for _, n := range nodes {
		got, gone := powerReadAll(ctx, env, n, patience)
		if gone { // the meta layer has said so for 8 s: the next nodes need not wait as long
			patience = 2 * time.Second
		}
		users := env.ListUsers(ctx, n)
		res.LostMsgs[n.Name()], res.LostUsers[n.Name()] = []string{}, []string{}
		for _, id := range ids {
			if !got[id] {
				res.LostMsgs[n.Name()] = append(res.LostMsgs[n.Name()], id)
			}
		}
		for _, pub := range res.AckedUsers {
			if _, ok := FindUser(users, pub); !ok {
				res.LostUsers[n.Name()] = append(res.LostUsers[n.Name()], pub)
			}
		}
		if l := res.LostMsgs[n.Name()]; len(l) > 0 {
			res.lostMsgs[n.Name()] = l
		}
		if l := res.LostUsers[n.Name()]; len(l) > 0 {
			res.lostUsers[n.Name()] = l
		}
	}
	Evidence("power-loss-result", res)
	measure := func(what string, v any) {
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond).String()
		}
		AddReportEntry(fmt.Sprintf("power-loss [%s, --sync %s]: %s", env.Cluster.Target(), syncMode, what), fmt.Sprint(v), ReportEntryVisibilityFailureOrVerbose)
	}
	measure("acked messages / user adds at the cut", fmt.Sprintf("%d / %d", res.AckedMsgs, len(res.AckedUsers)))
	for _, n := range nodes {
		measure("lost acked messages / user adds on "+n.Name(), fmt.Sprintf("%d / %d", len(res.LostMsgs[n.Name()]), len(res.LostUsers[n.Name()])))
	}
	measure("cut to every node restarted (processes)", restarted)
	measure("cut to every node's new process answering", observed)
	measure("restart to healthy cluster", healed)
	GinkgoWriter.Printf("power loss --sync %s: %d msgs and %d users acked; lost msgs per node %v, lost users per node %v\n",
		syncMode, res.AckedMsgs, len(res.AckedUsers), counts(res.LostMsgs), counts(res.LostUsers))
	return res
}

func counts(m map[string][]string) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

// observePower waits until every node runs a process started after the
// cut; it returns the time from inject.
func observePower(ctx context.Context, act *fault.Active) time.Duration {
	GinkgoHelper()
	wctx, cancel := context.WithTimeout(ctx, restartBudget)
	defer cancel()
	Expect(act.WaitInjected(wctx)).To(Succeed())
	e := act.Evidence()
	return e.Injected.Sub(e.Start)
}

// healPower waits until the cluster is healthy and whole again.
func healPower(ctx context.Context, act *fault.Active) time.Duration {
	GinkgoHelper()
	Expect(act.Heal(ctx)).To(Succeed())
	wctx, cancel := context.WithTimeout(ctx, restartBudget)
	defer cancel()
	Expect(act.WaitHealed(wctx)).To(Succeed())
	e := act.Evidence()
	return e.End.Sub(e.HealStart)
}

// powerReadAll reads every message of the stream over a connection whose
// server is node n. A stream the cluster no longer knows (healthy, and
// "not found" for patience: the meta layer lost it) reads as empty, gone.
func powerReadAll(ctx context.Context, env *Env, n chaos.Node, patience time.Duration) (map[string]bool, bool) {
	GinkgoHelper()
	var nc *nats.Conn
	Eventually(func() (err error) {
		nc, err = chaos.DialInternal(env.Cluster, n)
		return err
	}).WithContext(ctx).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	defer nc.Close()
	js, err := jetstream.New(nc)
	Expect(err).NotTo(HaveOccurred())
	var (
		s        jetstream.Stream
		first404 time.Time
	)
	Eventually(func() error {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err = js.Stream(sctx, powerStream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if first404.IsZero() {
				first404 = time.Now()
			}
			if time.Since(first404) > patience {
				return nil
			}
		} else {
			first404 = time.Time{}
		}
		return err
	}).WithContext(ctx).WithTimeout(60*time.Second).WithPolling(250*time.Millisecond).Should(Succeed(), "stream %s via %s", powerStream, n.Name())
	got := map[string]bool{}
	if s == nil {
		GinkgoWriter.Printf("via %s: stream %s gone after the power loss\n", n.Name(), powerStream)
		return got, true
	}
	info := s.CachedInfo()
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		for {
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			m, err := s.GetMsg(gctx, seq)
			cancel()
			if err == nil {
				got[string(m.Data)] = true
				break
			}
			if ctx.Err() != nil || strings.Contains(err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return got, false
}
