package specs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/clusterinfo"
	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// usersLeader is the current leader of the users bucket's stream, as the
// cluster report on the first node tells it ("" if unknown).
func usersLeader(ctx context.Context, env *Env) string {
	r, err := env.Cluster.CLI(ctx, env.Cluster.Nodes()[0], "cluster", "report", "--json", "--nodes", fmt.Sprint(len(env.Cluster.Nodes())))
	if err != nil {
		return ""
	}
	var rep clusterinfo.Report
	if json.Unmarshal([]byte(r.Stdout), &rep) != nil {
		return ""
	}
	for _, b := range rep.Buckets {
		if b.Bucket == kv.UsersBucket {
			return b.Leader
		}
	}
	return ""
}

// usersLeaderVia asks through an existing (internal) connection.
func usersLeaderVia(ctx context.Context, nc *nats.Conn) string {
	js, err := jetstream.New(nc)
	if err != nil {
		return ""
	}
	st, err := kv.Inspect(ctx, js, kv.UsersBucket)
	if err != nil {
		return ""
	}
	return st.Leader
}
