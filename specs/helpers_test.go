package specs

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// usersLeader is the current leader of the users bucket's stream, as the
// stream reports it ("" if unknown).
func usersLeader(ctx context.Context, nc *nats.Conn) string {
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	st, err := kv.Inspect(ctx, js, kv.Buckets[0].Name)
	if err != nil {
		return ""
	}
	return st.Leader
}
