package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/storehash"
	"github.com/unibus/clusterkit/chaos/validate"
)

// The CLI's JSON, as `membershipd cluster replicas --stream S --json`,
// `user list --store kv --json --all` and `cluster report --json` print it.
const (
	replicasJSON = `[
  {
    "node": "vps1",
    "first_seq": 1,
    "last_seq": 42,
    "msgs": 41,
    "bytes": 5120
  },
  {
    "node": "vps2",
    "first_seq": 1,
    "last_seq": 40,
    "msgs": 39,
    "bytes": 4800
  }
]
`
	usersJSON = `[
  {
    "sign_pub": "aa11",
    "handle": "alice",
    "role": "admin",
    "status": "active",
    "added_at": "2026-12-06T12:00:00Z"
  },
  {
    "sign_pub": "bb22",
    "handle": "spec-nemesis",
    "role": "member",
    "status": "revoked",
    "added_at": "2026-12-06T12:00:01Z",
    "revoked_at": "2026-12-06T12:00:02Z"
  }
]
`
	reportJSON = `{
  "servers": [
    {"node": "vps1", "cluster": "unibus", "version": "dev", "routes": [], "meta_leader": "vps2", "in_quorum": true, "reason": "", "features": [],
     "allowlist": {"users": 2, "active": 1, "hash": "h1", "applied_rev": 9}},
    {"node": "vps2", "cluster": "unibus", "version": "dev", "routes": [], "meta_leader": "vps2", "in_quorum": true, "reason": "", "features": []}
  ],
  "buckets": [],
  "problems": ["2 of 3 nodes answered"]
}
`
)

func TestParseCLIOutput(t *testing.T) {
	rs, err := parseReplicas("ROOM_x", replicasJSON)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0] != (Replica{Node: "vps1", Stream: "ROOM_x", FirstSeq: 1, LastSeq: 42, Msgs: 41, Bytes: 5120}) || rs[1].Node != "vps2" || rs[1].LastSeq != 40 {
		t.Fatalf("replicas %+v", rs)
	}
	if d := diverged(rs); len(d) != 1 || !strings.Contains(d[0], "ROOM_x") {
		t.Errorf("two replicas 42 and 40 deep: diverged %v", d)
	}
	users, err := parseUsers(usersJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got := activeOf(users, []string{"aa11", "bb22", "cc33"}); len(got) != 1 || got[0] != "aa11" {
		t.Errorf("active of aa11, bb22, cc33: %v", got)
	}
	for key, want := range map[string]string{"aa11": "active", "bb22": "revoked", "cc33": ""} {
		if got := userStatus(users, key); got != want {
			t.Errorf("status of %s = %q, want %q", key, got, want)
		}
	}
	sts, err := parseReport(reportJSON)
	if err != nil {
		t.Fatal(err)
	}
	var a Allowlists
	a.kv(users)
	a.compare(sts, 3)
	if a.KV.Users != 2 || a.KV.Active != 1 || a.KV.Hash == "" {
		t.Errorf("kv side %+v", a.KV)
	}
	if a.Converged || len(a.Nodes) != 2 || a.Nodes[0].Node != "vps1" || a.Nodes[0].Hash != "h1" || a.Nodes[1].Hash != "" {
		t.Errorf("two of three nodes, neither matching the KV, judged %+v", a)
	}
	for name, bad := range map[string]string{"replicas": "not json", "users": "{}", "report": `{"servers": []}`} {
		var err error
		switch name {
		case "replicas":
			_, err = parseReplicas("S", bad)
		case "users":
			_, err = parseUsers(bad)
		case "report":
			_, err = parseReport(bad)
		}
		if err == nil {
			t.Errorf("%s: %q parsed", name, bad)
		}
	}
}

// writeStore writes stream ROOM_t with a standalone server into a new
// store dir: msgs messages, message odd holding other data of the same
// length (0: none).
func writeStore(t *testing.T, msgs, odd int) string {
	t.Helper()
	dir := t.TempDir()
	s, err := server.NewServer(&server.Options{ServerName: "w", DontListen: true, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ROOM_t", Subjects: []string{"room.t"}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= msgs; i++ {
		data := fmt.Sprintf("message %03d", i)
		if i == odd {
			data = fmt.Sprintf("MESSAGE %03d", i)
		}
		if _, err := js.Publish(ctx, "room.t", []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestDivergenceSeesContent: two replicas equal in count, sequences and
// bytes, one message's content different: the content hash read from
// each store makes the checker flag the stream; identical stores pass.
func TestDivergenceSeesContent(t *testing.T) {
	stores := map[string]string{"n1": writeStore(t, 20, 0), "n2": writeStore(t, 20, 7), "n3": writeStore(t, 20, 0)}
	hashes := map[string]map[string]string{}
	var reps Replicas
	for node, dir := range stores {
		got, err := storehash.ReadCopy(context.Background(), dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Msgs != 20 || got[0].LastSeq != 20 {
			t.Fatalf("%s: %+v", node, got)
		}
		hashes[node] = map[string]string{"ROOM_t": got[0].Hash}
		// What each server's JSZ reports: the same for all three.
		reps.Replicas = append(reps.Replicas, Replica{Node: node, Stream: "ROOM_t", FirstSeq: 1, LastSeq: 20, Msgs: 20, Bytes: 1000})
	}
	if res := validate.Divergence(streamReplicas(reps), 3); res.Status() != "PASS" {
		t.Fatalf("without content every replica looks the same, yet: %+v", res)
	}
	reps = applyHashes(reps, hashes)
	if reps.Converged || len(reps.Diverged) != 1 || !strings.Contains(reps.Diverged[0], "ROOM_t") {
		t.Errorf("replicas.json: converged %v, diverged %v", reps.Converged, reps.Diverged)
	}
	res := validate.Divergence(streamReplicas(reps), 3)
	if res.Status() != "FAIL" || !strings.Contains(fmt.Sprint(res.Anomalies), "n2") {
		t.Errorf("the checker did not flag n2's copy: %+v", res)
	}
	// The same three stores without the odd message agree.
	hashes["n2"] = hashes["n1"]
	if res := validate.Divergence(streamReplicas(applyHashes(Replicas{Replicas: reps.Replicas}, hashes)), 3); res.Status() != "PASS" {
		t.Errorf("equal stores judged %+v", res)
	}
}

// The ssh target needs the opt-in, a nodes.env, and no local-only
// settings; every refusal is bad input (exit 2) and says what to give.
func TestSSHTargetNeedsOptIn(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Target: "ssh", SSH: SSHTarget{NodesFile: "nodes.env"}}, "--allow-disruptive"},
		{Config{Target: "ssh", AllowDisruptive: true}, "--nodes"},
		{Config{Target: "ssh", AllowDisruptive: true, SSH: SSHTarget{NodesFile: "nodes.env"}, Sync: "default"}, "--sync"},
		{Config{Target: "inproc"}, "TARGET=ssh"},
	} {
		err := tc.cfg.defaults()
		if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want bad input naming %s", tc.cfg, err, tc.want)
		}
	}
	ok := Config{Target: "ssh", AllowDisruptive: true, SSH: SSHTarget{NodesFile: "nodes.env"}}
	if err := ok.defaults(); err != nil {
		t.Errorf("opted in, no local binary needed: %v", err)
	}
}

// fakeNode and fakeCLI: a cluster whose CLI keeps a users table, as
// `user list --json --all` and `user revoke` on a node see it.
type fakeNode struct{ name string }

func (n fakeNode) Name() string              { return n.name }
func (fakeNode) Start(context.Context) error { return nil }
func (fakeNode) Stop(context.Context) error  { return nil }
func (fakeNode) Running() bool               { return true }
func (fakeNode) ClientURL() string           { return "" }
func (fakeNode) HealthzURL() string          { return "" }
func (fakeNode) RouteAddr() string           { return "" }

type fakeCLI struct {
	nodes   []chaos.Node
	users   map[string]string // key -> status
	down    string            // a node whose CLI fails
	revokes []string
}

func (c *fakeCLI) Target() string              { return "ssh" }
func (c *fakeCLI) Nodes() []chaos.Node         { return c.nodes }
func (c *fakeCLI) Node(name string) chaos.Node { return nil }
func (c *fakeCLI) TLS() chaos.TLSFiles         { return chaos.TLSFiles{} }
func (c *fakeCLI) Close() error                { return nil }
func (c *fakeCLI) CLI(_ context.Context, n chaos.Node, args ...string) (chaos.CLIResult, error) {
	if n.Name() == c.down {
		return chaos.CLIResult{Stderr: "no quorum", ExitCode: 1}, nil
	}
	switch strings.Join(args[:2], " ") {
	case "user list":
		var b strings.Builder
		b.WriteString("[")
		i := 0
		for k, st := range c.users {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"sign_pub":%q,"handle":"h","role":"member","status":%q,"added_at":"2026-12-06T12:00:00Z"}`, k, st)
			i++
		}
		b.WriteString("]")
		return chaos.CLIResult{Stdout: b.String()}, nil
	case "user revoke":
		key := args[len(args)-1]
		c.revokes = append(c.revokes, key)
		c.users[key] = "revoked"
		return chaos.CLIResult{Stdout: "revoked"}, nil
	}
	return chaos.CLIResult{ExitCode: 2}, nil
}

// TestRevokeActive: the end-of-run cleanup revokes exactly the run's keys
// that are active (not the operator's users, not what is revoked or was
// never added), through the first node whose CLI answers, and confirms.
func TestRevokeActive(t *testing.T) {
	c := &fakeCLI{nodes: []chaos.Node{fakeNode{"a"}, fakeNode{"b"}}, down: "a",
		users: map[string]string{"op": "active", "k1": "active", "k2": "revoked", "k3": "active"}}
	left, err := revokeActive(context.Background(), c, []string{"k1", "k2", "k3", "k4"})
	if err != nil || len(left) != 0 {
		t.Fatalf("left %v, err %v", left, err)
	}
	slices.Sort(c.revokes)
	if !slices.Equal(c.revokes, []string{"k1", "k3"}) || c.users["op"] != "active" {
		t.Errorf("revoked %v, users now %v", c.revokes, c.users)
	}
	c.down = "b"
	c.users["k1"] = "active"
	left, err = revokeActive(context.Background(), &fakeCLI{nodes: []chaos.Node{fakeNode{"b"}}, down: "b", users: c.users}, []string{"k1"})
	if err == nil || len(left) != 1 {
		t.Errorf("no node answers: left %v, err %v; want k1 reported", left, err)
	}
}
