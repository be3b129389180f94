package admin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StepDown asks the leader of stream to hand its leadership to another
// replica (`$JS.API.STREAM.LEADER.STEPDOWN`): the operator's remedy for a
// follower that never catches up (nats-server 2.15.2 can loop on "Expected
// first catchup entry to be a snapshot" until the leader changes). The new
// leader is elected by the replicas; it is not chosen here.
func StepDown(ctx context.Context, nc *nats.Conn, stream string) error {
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil)
	if err != nil {
		return fmt.Errorf("step down the leader of %s: %w", stream, err)
	}
	var resp struct {
		Success bool             `json:"success"`
		Error   *server.ApiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return fmt.Errorf("step down the leader of %s: decode %q: %w", stream, m.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("step down the leader of %s: %s (code %d)", stream, resp.Error.Description, resp.Error.ErrCode)
	}
	if !resp.Success {
		return fmt.Errorf("step down the leader of %s: refused: %s", stream, m.Data)
	}
	return nil
}
