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
// test moves it there with a step-down) is moved back to the stream's
// leader by the daemon that leads the stream (api KeepPlacement), within
// a few of its 10 s rounds, on three in-process nodes.
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
	// Three of the keeper's rounds, with margin.
	var m2, s2, c2 string
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		m2, s2, c2 = leaders()
		if c2 != "" && c2 != m2 && c2 == s2 {
			t.Logf("consumer moved to the stream's leader %s (meta leader %s)", c2, m2)
			return
		}
	}
	t.Fatalf("consumer still led by %q (meta leader %q, stream leader %q) after 45 s", c2, m2, s2)
}
