package node_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/node"
	"github.com/unibus/clusterkit/membershipd/store"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// A stalled memberships watch must not leave a node refusing a new room for
// good: with every node's watch delivering nothing, a membership written
// to the bucket reaches every node's ACL (read from the stream's leader) —
// seen from outside as the member subscribing to the room on each node
// without a permissions violation.
func TestStalledMembershipsWatchCatchesUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _ := startCluster(t, ctx, 3)
	js := c.js(t, c.Nodes()[0])

	member, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.NewUsers(js).AddUser(ctx, store.User{SignPub: member.SignPub(), Handle: "stalled-watch", Role: identity.RoleMember}); err != nil {
		t.Fatal(err)
	}
	node.StallMembershipsWatch(true)
	t.Cleanup(func() { node.StallMembershipsWatch(false) })

	const room = "roomstalledwatch"
	b, err := js.KeyValue(ctx, kv.RoomsByMemberBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, member.SignPub()+"."+room, []byte("member")); err != nil {
		t.Fatal(err)
	}
	put := time.Now()
	for _, n := range c.Nodes() {
		var last error
		for {
			if last = subscribeRoom(c, n, member, room); last == nil {
				t.Logf("%s: room admitted %v after the put", n.Name(), time.Since(put).Round(time.Millisecond))
				break
			}
			// The claim's deadline is the 2 s the API waits for every
			// node's ACL; 15 s leaves margin for a loaded machine.
			if time.Since(put) > 15*time.Second {
				t.Fatalf("%s still refuses the room 15 s after the membership was written (watch stalled): %v", n.Name(), last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// subscribeRoom connects to n as id and subscribes to room's subject; a
// permissions violation (the node's ACL lacks the room) is an error.
func subscribeRoom(c chaos.Cluster, n chaos.Node, id *identity.Identity, room string) error {
	errs := make(chan error, 4)
	nc, err := chaos.DialAs(c, n, id, nats.Timeout(2*time.Second), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := nc.SubscribeSync(api.RoomSubject(room)); err != nil {
		return err
	}
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		return err
	}
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := nc.LastError(); err != nil && strings.Contains(strings.ToLower(err.Error()), "permissions") {
		return errors.New(err.Error())
	}
	return nil
}
