package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/unibus/clusterkit/chaos/diskfault"
)

// Power loss: with Options.PowerLossFS set, each node's --nats-store is a
// diskfault mount over <Dir>/<node>/disk, so PowerLoss can drop every write
// the node did not fsync (kill -9 alone keeps the page cache, and with it
// everything).

// powerState is the process target's power-loss plumbing.
type powerState struct {
	mu    sync.Mutex
	mode  diskfault.MetadataMode
	disks map[string]*diskfault.FS // node name → its store's mount
	last  []diskfault.Stats
}

func (n *Node) storeDir() string   { return filepath.Join(n.c.opts.Dir, n.name, "jetstream") }
func (n *Node) backingDir() string { return filepath.Join(n.c.opts.Dir, n.name, "disk") }

// mountStores puts every node's store on its own mount (New, when
// Options.PowerLossFS is set).
func (c *Cluster) mountStores() error {
	if c.opts.PowerLossFS == "" {
		return nil
	}
	c.power = &powerState{mode: c.opts.PowerLossFS, disks: map[string]*diskfault.FS{}}
	for _, n := range c.nodes {
		for _, d := range []string{n.storeDir(), n.backingDir()} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return fmt.Errorf("power loss: %w", err)
			}
		}
		fs, err := diskfault.Mount(n.backingDir(), n.storeDir(), diskfault.Options{MetadataDurable: c.opts.PowerLossFS})
		if err != nil {
			_ = c.unmountStores()
			return fmt.Errorf("power loss: store of %s: %w", n.name, err)
		}
		c.power.disks[n.name] = fs
	}
	return nil
}

// unmountStores detaches every store mount (Close, after the nodes stop).
func (c *Cluster) unmountStores() error {
	if c.power == nil {
		return nil
	}
	c.power.mu.Lock()
	defer c.power.mu.Unlock()
	var errs []error
	for name, fs := range c.power.disks {
		if err := fs.Unmount(); err != nil {
			errs = append(errs, err)
		}
		delete(c.power.disks, name)
	}
	return errors.Join(errs...)
}

// PowerLossAvailable says why PowerLoss cannot run on this cluster, or nil.
func (c *Cluster) PowerLossAvailable() error {
	if c.power == nil {
		if err := diskfault.Available(); err != nil {
			return err
		}
		return errors.New("power loss needs the stores on FUSE mounts: set process.Options.PowerLossFS")
	}
	return nil
}

// PowerLoss cuts the power of every node at one instant: every write not
// yet fsynced is dropped on all stores atomically (later writes fail with
// EIO), then every node is SIGKILLed. The stores are remounted over what was
// durable and the nodes that were running start again on it.
func (c *Cluster) PowerLoss(ctx context.Context) error {
	if err := c.PowerLossAvailable(); err != nil {
		return err
	}
	c.power.mu.Lock()
	defer c.power.mu.Unlock()
	var (
		fss     []*diskfault.FS
		running []*Node
	)
	for _, n := range c.nodes {
		fss = append(fss, c.power.disks[n.name])
		if n.Running() {
			running = append(running, n)
		}
	}
	stats, cutErr := diskfault.PowerCut(fss...)
	c.power.last = stats
	for _, n := range running {
		if err := n.Kill(ctx, 0); err != nil {
			return fmt.Errorf("power loss: %w", err)
		}
	}
	if cutErr != nil {
		return fmt.Errorf("power loss: cut: %w", cutErr)
	}
	// Power back: a fresh mount per store, so no kernel cache from before
	// the cut survives.
	for _, n := range c.nodes {
		if err := c.power.disks[n.name].Unmount(); err != nil {
			return fmt.Errorf("power loss: %w", err)
		}
		fs, err := diskfault.Mount(n.backingDir(), n.storeDir(), diskfault.Options{MetadataDurable: c.power.mode})
		if err != nil {
			delete(c.power.disks, n.name)
			return fmt.Errorf("power loss: remount store of %s: %w", n.name, err)
		}
		c.power.disks[n.name] = fs
	}
	for _, n := range running {
		if err := n.Start(ctx); err != nil {
			return fmt.Errorf("power loss: restart: %w", err)
		}
	}
	return nil
}

// PowerLossStats is what the last PowerLoss dropped, per node in order.
func (c *Cluster) PowerLossStats() []diskfault.Stats {
	if c.power == nil {
		return nil
	}
	c.power.mu.Lock()
	defer c.power.mu.Unlock()
	return append([]diskfault.Stats(nil), c.power.last...)
}
