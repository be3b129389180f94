package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/clientcheck/probe"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// member is a registered user of a membershipd cluster with its room.
type member struct {
	c       chaos.Cluster
	id      *identity.Identity
	servers []string // every node's client URL
	apis    []string // every node's control-plane base URL
	api     *probe.API
	room    api.Room
	key     []byte
}

// addUser registers id as a member through the users KV (what `membershipd
// user add` does) and waits until node n admits it.
func addUser(ctx context.Context, c chaos.Cluster, n chaos.Node, id *identity.Identity, handle string) error {
	nc, err := chaos.DialInternal(c, n)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := kv.NewUsers(js).AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: handle, Role: identity.RoleMember}); err != nil {
		return fmt.Errorf("add user %s: %w", handle, err)
	}
	for {
		uc, err := chaos.DialAs(c, n, id)
		if err == nil {
			uc.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("user %s not admitted: %w", handle, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// newMember registers a fresh user on c and creates a room for it through
// the control plane (signed requests).
func newMember(ctx context.Context, c chaos.Cluster, handle string) (*member, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	if err := addUser(ctx, c, c.Nodes()[0], id, handle); err != nil {
		return nil, err
	}
	m := &member{c: c, id: id}
	for _, n := range c.Nodes() {
		m.servers = append(m.servers, n.ClientURL())
		m.apis = append(m.apis, strings.TrimSuffix(n.HealthzURL(), "/healthz"))
	}
	if m.api, err = probe.NewAPI(m.apis, c.TLS().ClientCA, id); err != nil {
		return nil, err
	}
	return m, nil
}

// createRoom creates a room named name; the member then publishes to it.
func (m *member) createRoom(ctx context.Context, name string) error {
	idem, req, key, err := probe.NewRoomRequest(m.id, name)
	if err != nil {
		return err
	}
	room, err := m.api.CreateRoom(ctx, idem, req)
	if err != nil {
		return fmt.Errorf("create room %s: %w", name, err)
	}
	m.room, m.key = room, key
	return nil
}

// dial connects as the member to node n (no reconnect).
func (m *member) dial(n chaos.Node, opts ...nats.Option) (*nats.Conn, error) {
	return chaos.DialAs(m.c, n, m.id, opts...)
}

// consumer is the member's control-plane-made pull consumer on its room,
// delivering from stream sequence from.
func (m *member) consumer(ctx context.Context, js jetstream.JetStream, from uint64) (jetstream.Consumer, error) {
	var lastErr error
	for {
		rc, err := m.api.Consumer(ctx, m.room.ID, api.ConsumerRequest{DeliverFromSeq: from, ClientNode: js.Conn().ConnectedServerName()})
		if err == nil {
			cons, err := js.Consumer(ctx, api.RoomStream(m.room.ID), rc.Consumer)
			if err == nil {
				return cons, nil
			}
			lastErr = err
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(lastErr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// placement names the leaders of the room stream, the member's consumer
// and the meta layer: a consumer led by a stream follower (api pinTarget)
// delivers a route hop later than one led by the stream's leader.
func (m *member) placement(ctx context.Context) string {
	nc, err := chaos.DialInternal(m.c, m.c.Nodes()[0])
	if err != nil {
		return "placement: " + err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "placement: " + err.Error()
	}
	stream, sl, cl := api.RoomStream(m.room.ID), "?", "?"
	if st, err := js.Stream(ctx, stream); err == nil && st.CachedInfo().Cluster != nil {
		sl = st.CachedInfo().Cluster.Leader
	}
	if c, err := js.Consumer(ctx, stream, authn.RoomConsumer(m.id.SignPub())); err == nil && c.CachedInfo().Cluster != nil {
		cl = c.CachedInfo().Cluster.Leader
	}
	return fmt.Sprintf("room stream led by %s, the member's consumer by %s, the meta layer by %s", sl, cl, chaos.MetaLeader(ctx, nc))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// dialAll connects as the member with every node as a seed (reconnects as
// opts say), as a real client does.
func (m *member) dialAll(opts ...nats.Option) (*nats.Conn, error) {
	t := m.c.TLS()
	tlsCfg, err := pki.ClientTLSConfig(t.ClientCA, t.OperatorCert, t.OperatorKey)
	if err != nil {
		return nil, err
	}
	kp := m.id.KeyPair()
	all := append([]nats.Option{nats.Secure(tlsCfg), nats.Nkey(m.id.NKey(), kp.Sign), nats.Timeout(3 * time.Second),
		nats.CustomInboxPrefix(authn.InboxPrefix(m.id.SignPub()))}, opts...)
	return nats.Connect(strings.Join(m.servers, ","), all...)
}

// usersStore returns the users-KV add of `membershipd user add`.
func usersStore(nc *nats.Conn) (func(ctx context.Context, id *identity.Identity, handle string) error, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	u := kv.NewUsers(js)
	return func(ctx context.Context, id *identity.Identity, handle string) error {
		_, err := u.AddUser(ctx, store.User{SignPub: id.SignPub(), Handle: handle, Role: identity.RoleMember})
		return err
	}, nil
}
