package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// writeStandalone writes the users bucket's stream with a real standalone
// nats-server, as the old loopback bootstrap did.
func writeStandalone(t *testing.T, storeDir string) {
	t.Helper()
	s, err := server.NewServer(&server.Options{ServerName: "seed", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: storeDir, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("standalone server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, kv.StreamConfig(kv.Buckets[0], 1)); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCheckRefusesStandaloneControlPlaneStream(t *testing.T) {
	dir := t.TempDir()
	writeStandalone(t, dir)
	err := checkStoreDir(&Config{Store: StoreKV, StoreDir: dir})
	if err == nil {
		t.Fatal("a store holding a standalone KV_UNIBUS_users was accepted")
	}
	if !IsConfigError(err) {
		t.Fatalf("not bad input (exit 2): %v", err)
	}
	want := filepath.Join(dir, "jetstream", "$G", "streams", "KV_UNIBUS_users")
	for _, s := range []string{"KV_UNIBUS_users", "'" + want + "'", "mv ", "user add --store kv"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("not one line: %q", err)
	}
	// The advised fix works: with the stream moved aside the store passes.
	if err := os.Rename(want, filepath.Join(t.TempDir(), "moved")); err != nil {
		t.Fatal(err)
	}
	if err := checkStoreDir(&Config{Store: StoreKV, StoreDir: dir}); err != nil {
		t.Fatalf("after moving the stream aside: %v", err)
	}
}

func TestStoreCheckAcceptsClusteredAndEmptyStores(t *testing.T) {
	empty := t.TempDir()
	if err := checkStoreDir(&Config{Store: StoreKV, StoreDir: empty}); err != nil {
		t.Fatalf("empty store: %v", err)
	}
	if err := checkStoreDir(&Config{Store: StoreKV, StoreDir: filepath.Join(empty, "missing")}); err != nil {
		t.Fatalf("missing store: %v", err)
	}
	// A store that ran clustered: the meta layer's dir is there.
	clustered := t.TempDir()
	writeStandalone(t, clustered)
	if err := os.MkdirAll(filepath.Join(clustered, "jetstream", "$SYS", "_js_", "_meta_"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := checkStoreDir(&Config{Store: StoreKV, StoreDir: clustered}); err != nil {
		t.Fatalf("clustered store: %v", err)
	}
	// A SQLite node never opens the JetStream store.
	standalone := t.TempDir()
	writeStandalone(t, standalone)
	if err := checkStoreDir(&Config{Store: StoreSQLite, StoreDir: standalone}); err != nil {
		t.Fatalf("sqlite node: %v", err)
	}
}
