package fault_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/unibus/clusterkit/chaos/fault"
	"github.com/unibus/clusterkit/chaos/inproc"
	"github.com/unibus/clusterkit/chaos/process"
)

// TestPowerLossUnavailable: power-loss is refused, with a reason, where the
// stores cannot drop unsynced writes: in-process nodes, and a process
// cluster made without the FUSE stores (kill -9 alone would keep the page
// cache and prove nothing). It is never swapped for a kill.
func TestPowerLossUnavailable(t *testing.T) {
	f, err := fault.Lookup("power-loss")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := inproc.New(inproc.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ic.Close() })
	err = f.Available(ic, fault.Args{})
	if !errors.Is(err, fault.ErrUnavailable) || !strings.Contains(err.Error(), "--target=process") {
		t.Fatalf("inproc: Available = %v, want unavailable naming --target=process", err)
	}
	pc, err := process.New(process.Options{Dir: t.TempDir(), Binary: "/nonexistent/membershipd"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	err = f.Available(pc, fault.Args{})
	if !errors.Is(err, fault.ErrUnavailable) || !strings.Contains(err.Error(), "PowerLossFS") && !strings.Contains(err.Error(), "FUSE") {
		t.Fatalf("process without FUSE stores: Available = %v, want unavailable naming PowerLossFS or FUSE", err)
	}
	r := fault.NewRunner(pc, nil)
	if _, err := r.InjectName(context.Background(), "power-loss", fault.Args{}); !errors.Is(err, fault.ErrUnavailable) {
		t.Fatalf("Inject on plain stores = %v, want ErrUnavailable", err)
	}
}
