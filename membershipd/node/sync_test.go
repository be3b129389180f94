package node

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/unibus/clusterkit/membershipd/pki"
)

// --sync reaches the server options, and only "always" reports the
// sync-always feature; /healthz's posture names the policy.
func TestSyncPolicy(t *testing.T) {
	dir := t.TempDir()
	l, err := pki.MintCluster(filepath.Join(dir, "tls"), []pki.NodeSpec{{Name: "n1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	nf := l.Nodes["n1"]
	for _, c := range []struct {
		flag       string
		always     bool
		interval   time.Duration
		posture    string
		syncAlways bool
	}{
		{"", true, 0, "always", true},
		{"always", true, 0, "always", true},
		{"default", false, 0, "default", false},
		{"30s", false, 30 * time.Second, "30s", false},
	} {
		cfg := Config{Name: "n1", Store: StoreKV, Sync: c.flag,
			ServerCert: nf.ServerCert, ServerKey: nf.ServerKey, ClientCA: l.ClientCACert,
			RouteCert: nf.RouteCert, RouteKey: nf.RouteKey, RouteCA: l.RouteCACert, RouteSecretFile: l.RouteSecret}
		o, err := buildOptions(&cfg)
		if err != nil {
			t.Fatalf("--sync %q: %v", c.flag, err)
		}
		if o.SyncAlways != c.always || o.SyncInterval != c.interval {
			t.Errorf("--sync %q: SyncAlways=%v SyncInterval=%v", c.flag, o.SyncAlways, o.SyncInterval)
		}
		if got := slices.Contains(featuresOf(o, true), FeatureSyncAlways); got != c.syncAlways {
			t.Errorf("--sync %q: features %v", c.flag, featuresOf(o, true))
		}
		if got := (&Node{cfg: cfg}).syncPosture(); got != c.posture {
			t.Errorf("--sync %q: posture %q, want %q", c.flag, got, c.posture)
		}
	}
	for _, bad := range []string{"sometimes", "0s", "-1s", "ALWAYS"} {
		if _, err := ParseSync(bad); err == nil || !IsConfigError(err) {
			t.Errorf("--sync %q accepted (%v)", bad, err)
		}
	}
}
