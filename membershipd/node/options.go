package node

import (
	"net/url"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/pki"
)

const routeUser = "unibus-route"

// buildOptions turns the config into nats-server options. A SQLite node
// runs standalone: no cluster block and no JetStream, so the KV buckets of
// the replicated store stay untouched on disk for a later retry.
func buildOptions(cfg *Config) (*server.Options, error) {
	clientTLS, err := pki.ServerTLSConfig(cfg.ServerCert, cfg.ServerKey, cfg.ClientCA, true)
	if err != nil {
		return nil, configErr("data-plane TLS: %v", err)
	}
	o := &server.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Bind,
		Port:                   cfg.ClientPort,
		NoSigs:                 true,
		DisableJetStreamBanner: true,
		TLSConfig:              clientTLS,
		TLSVerify:              true,
		TLSTimeout:             2,
		// nats.go refuses nkeys unless the server offers a nonce, and a
		// custom authenticator alone does not make it offer one.
		AlwaysEnableNonce: true,
	}
	if cfg.Store == StoreSQLite {
		return o, nil
	}
	secret, err := pki.ReadSecretFile(cfg.RouteSecretFile)
	if err != nil {
		return nil, configErr("%v", err)
	}
	routeTLS, err := pki.ServerTLSConfig(cfg.RouteCert, cfg.RouteKey, cfg.RouteCA, true)
	if err != nil {
		return nil, configErr("route TLS: %v", err)
	}
	for _, r := range cfg.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return nil, configErr("--routes entry %q: %v", r, err)
		}
		// Routes only form when the URL carries the route credentials.
		u.User = url.UserPassword(routeUser, secret)
		o.Routes = append(o.Routes, u)
	}
	o.JetStream = true
	o.StoreDir = cfg.StoreDir
	// Explicit limits: nats-server would otherwise take 75% of the free
	// disk, shared by the rooms and the control plane alike.
	o.JetStreamMaxStore = cfg.JSMaxStore
	o.JetStreamMaxMemory = cfg.JSMaxMem
	o.Cluster = server.ClusterOpts{
		Name:       cfg.Cluster,
		Host:       cfg.Bind,
		Port:       cfg.RoutePort,
		Username:   routeUser,
		Password:   secret,
		TLSConfig:  routeTLS,
		TLSTimeout: 2,
		Advertise:  cfg.Advertise,
	}
	applyColdStartFixes(o)
	sp, err := ParseSync(cfg.Sync)
	if err != nil {
		return nil, err
	}
	// After the fixes: --sync may relax SyncAlways on purpose.
	o.SyncAlways, o.SyncInterval = sp.Always, sp.Interval
	return o, nil
}

// Feature names reported by `version --features` and /healthz.
const (
	FeatureRoutePoolOff = "route-pool-off"
	FeatureNoAdvertise  = "no-advertise"
	FeatureKVOpenRetry  = "kv-open-retry"
	FeatureSyncAlways   = "sync-always"
)

func featuresOf(o *server.Options, retry bool) []string {
	var f []string
	if o.Cluster.PoolSize == -1 {
		f = append(f, FeatureRoutePoolOff)
	}
	if o.Cluster.NoAdvertise {
		f = append(f, FeatureNoAdvertise)
	}
	if retry {
		f = append(f, FeatureKVOpenRetry)
	}
	if o.SyncAlways {
		f = append(f, FeatureSyncAlways)
	}
	return f
}

// Features lists the cold-start fixes this binary sets, read back from the
// same applyColdStartFixes that every clustered node's options go through.
func Features() []string {
	o := &server.Options{}
	applyColdStartFixes(o)
	return featuresOf(o, DefaultBootstrapBudget > 0)
}

// applyColdStartFixes is the one place the fixes from the real deploy live.
func applyColdStartFixes(o *server.Options) {
	o.SyncAlways = true          // the default 2-minute fsync loses acked writes
	o.Cluster.PoolSize = -1      // route pooling off
	o.Cluster.NoAdvertise = true // never gossip client URLs (bridge IPs)
}
