package probe_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/chaos/clustertest"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
)

// TestConsumerOffTheMetaLeader: a member's consumer whose leader ends up
// on the meta layer's leader (leaders move on their own after a crash; the
// test moves it there with a step-down) is moved off it by the daemon that
// leads the stream (api KeepPlacement), within a few of its 10 s rounds,
// on three in-process nodes; and so is one moved onto the node the member
// reads through (after a failover the client reconnects elsewhere, and
// no reset places anything while a node is down).
func TestConsumerOffTheMetaLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c, _ := clustertest.Inproc(t, inproc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	user := clustertest.AddUser(ctx, t, c, "placement")
	tf := c.TLS()
	cfg := probe.Config{CA: tf.ClientCA, Cert: tf.OperatorCert, Key: tf.OperatorKey, Identity: user, Count: 20}
	for _, n := range c.Nodes() {
		cfg.Servers = append(cfg.Servers, n.ClientURL())
		cfg.APIURLs = append(cfg.APIURLs, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
	}
	rep, err := probe.Run(ctx, cfg)
	if err != nil || !rep.OK() {
		t.Fatalf("probe run: err %v report %+v", err, rep)
	}
	stream, consumer := api.RoomStream(rep.RoomID), authn.RoomConsumer(user.SignPub())

	nc, js := internalJS(t, c, c.Nodes()[0])
	leaders := func() (meta, streamLeader, consLeader string) {
		meta = chaos.MetaLeader(ctx, nc)
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if st, err := js.Stream(ictx, stream); err == nil && st.CachedInfo().Cluster != nil {
			streamLeader = st.CachedInfo().Cluster.Leader
		}
		if ci, err := js.Consumer(ictx, stream, consumer); err == nil && ci.CachedInfo().Cluster != nil {
			consLeader = ci.CachedInfo().Cluster.Leader
		}
		return
	}
	stepdown := func(subject, to string) {
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
		_, _ = nc.Request(subject, req, 2*time.Second)
	}

	// The layout: stream led off the meta leader, the consumer led by
	// the meta leader.
	var meta, sl, cl string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("layout not reached: meta %q stream %q consumer %q", meta, sl, cl)
		}
		meta, sl, cl = leaders()
		switch {
		case meta == "" || sl == "" || cl == "":
		case sl == meta:
			other := c.Nodes()[0].Name()
			if other == meta {
				other = c.Nodes()[1].Name()
			}
			stepdown("$JS.API.STREAM.LEADER.STEPDOWN."+stream, other)
		case cl != meta:
			stepdown("$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+consumer, meta)
		default:
			t.Logf("consumer %s led by the meta leader %s; stream led by %s", consumer, meta, sl)
			goto moved
		}
	}
moved:
	// offWithin waits three of the keeper's rounds, with margin, for the
	// consumer to lead from neither the meta leader nor avoid.
	offWithin := func(what, avoid string) {
		t.Helper()
		var m2, s2, c2 string
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			m2, s2, c2 = leaders()
			if c2 != "" && m2 != "" && c2 != m2 && c2 != avoid {
				t.Logf("consumer moved off %s: led by %s (meta leader %s, stream leader %s)", what, c2, m2, s2)
				return
			}
		}
		t.Fatalf("consumer still led by %q (meta leader %q, stream leader %q, %s %q) after 45 s", c2, m2, s2, what, avoid)
	}
	offWithin("the meta leader", "")

	// The member now reads through the node that leads its consumer (as
	// after a failover, when its node died and it reconnected there): it
	// says so in a consumer request, as clientcheck does after a reconnect.
	_, _, client := leaders()
	if client == "" {
		t.Fatal("the consumer has no leader")
	}
	a, err := probe.NewAPI(cfg.APIURLs, cfg.CA, user)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Consumer(ctx, rep.RoomID, api.ConsumerRequest{ClientNode: client}); err != nil {
		t.Fatalf("consumer request naming client node %s: %v", client, err)
	}
	t.Logf("the member reads through %s, which leads its consumer", client)
	offWithin("the client's node", client)
}
