package probe

import (
	"context"
	"sync"
)

// connState follows the NATS connection for the publisher: the disconnect
// handler closes the channel an in-flight publish watches (so the publish
// is cancelled and retried at once instead of waiting for its timeout), and
// the reconnect handler releases publishers waiting for a connection.
type connState struct {
	mu     sync.Mutex
	up     bool
	server string
	down   chan struct{} // closed when the current connection drops
	upCh   chan struct{} // closed while connected
}

func newConnState(server string) *connState {
	up := make(chan struct{})
	close(up)
	return &connState{up: true, server: server, down: make(chan struct{}), upCh: up}
}

// disconnected marks the connection down and returns the server it was
// connected to.
func (c *connState) disconnected() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		c.up = false
		close(c.down)
		c.upCh = make(chan struct{})
	}
	return c.server
}

// reconnected marks the connection up on server.
func (c *connState) reconnected(server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.server = server
	if !c.up {
		c.up = true
		c.down = make(chan struct{})
		close(c.upCh)
	}
}

// current is the server the client is (or was last) connected to.
func (c *connState) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

// waitUp waits for a connection and returns the channel closed when that
// connection drops.
func (c *connState) waitUp(ctx context.Context) (<-chan struct{}, error) {
	for {
		c.mu.Lock()
		up, down, upCh := c.up, c.down, c.upCh
		c.mu.Unlock()
		if up {
			return down, nil
		}
		select {
		case <-upCh:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// setInitial names the first server, unless a handler already did.
func (c *connState) setInitial(server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == "" {
		c.server = server
	}
}
