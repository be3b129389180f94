package node

import "testing"

// The allowlist keeps an ACL record per admitted connection; closed
// connections are never reported to it, so only the sweep removes them.
func TestPruneConnsForgetsClosedConnections(t *testing.T) {
	a := newKVAllowlist()
	for cid := uint64(1); cid <= 100; cid++ { // 100 reconnects of one client
		a.Admitted("", cid, []string{"room"})
	}
	if got := a.connRecords(); got != 100 {
		t.Fatalf("records before the sweep: %d, want 100", got)
	}
	if dropped := a.pruneConns(map[uint64]bool{100: true}); dropped != 99 {
		t.Fatalf("dropped %d, want 99", dropped)
	}
	if got := a.connRecords(); got != 1 {
		t.Fatalf("records after the sweep: %d, want 1 (the open connection)", got)
	}
	if a.lacks(100, "room") {
		t.Fatal("the open connection lost its ACL record")
	}
}
