// Package node runs one membershipd node: the embedded nats-server with
// JetStream, the control-plane buckets, the quorum gate and the HTTPS
// control plane (/healthz).
package node

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// Config is everything a node needs. Paths, never secrets: the route secret
// is read from RouteSecretFile so it never appears in argv.
type Config struct {
	Name    string
	Cluster string
	Bind    string // address all three listeners bind to

	ClientPort int
	RoutePort  int
	HTTPPort   int

	// Routes are the other nodes' route URLs (nats-route://host:port),
	// without credentials: the node adds the route secret itself.
	Routes []string
	// Advertise overrides the route address gossiped to peers (tests put
	// proxies between routes and must keep gossip from bypassing them).
	Advertise string

	StoreDir string

	ServerCert, ServerKey, ClientCA string // data plane + HTTPS, client CA
	RouteCert, RouteKey, RouteCA    string // routes, separate route CA
	RouteSecretFile                 string

	// BusAuth is --bus-auth: enforce (default) or off (loopback only).
	BusAuth authn.Mode
	// InternalIDFile persists the internal service identity (0600).
	InternalIDFile string
	// Store is "kv" (replicated, default) or "sqlite" (standalone, DBPath).
	Store  string
	DBPath string

	KVReplicas      int
	BootstrapBudget time.Duration
	// RoomMaxConsumers is each new room stream's consumer limit (0: the
	// control plane's default).
	RoomMaxConsumers int
	// ClusterSize is the number of nodes; 0 means len(Routes)+1.
	ClusterSize int
	// Sync is --sync: "always" (the default, also ""), "default" (nats-
	// server's periodic fsync) or a duration (fsync interval). Anything but
	// always can lose acknowledged writes on power loss; it exists for the
	// power-loss negative control.
	Sync string

	// HTTP bounds the HTTPS listener (zero: defaults).
	HTTP HTTPLimits

	// JSMaxStore and JSMaxMem are this node's JetStream max_store and
	// max_mem (every stream, control plane included). ControlReserve is
	// the part of JSMaxStore rooms never get (see api.Limits). Zero:
	// defaults.
	JSMaxStore, JSMaxMem, ControlReserve int64
	// Rooms bounds room streams and room creation (zero fields: defaults).
	Rooms api.Limits

	Log *slog.Logger
}

// Defaults are the ports and budgets of the reference deployment.
const (
	DefaultClientPort      = 4250
	DefaultRoutePort       = 6250
	DefaultHTTPPort        = 8470
	DefaultKVReplicas      = 3
	DefaultBootstrapBudget = 120 * time.Second
	DefaultJSMaxStore      = 8 << 30
	DefaultJSMaxMem        = 256 << 20
	DefaultControlReserve  = 1 << 30
)

// Stores.
const (
	StoreKV     = "kv"
	StoreSQLite = "sqlite"
)

// ConfigError is bad input: the CLI exits 2 on it.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func configErr(format string, args ...any) error {
	return &ConfigError{Msg: fmt.Sprintf(format, args...)}
}

// IsConfigError tells bad input from runtime failures.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// SyncPolicy is a parsed --sync.
type SyncPolicy struct {
	Always   bool
	Interval time.Duration // 0 with !Always: nats-server's default
}

// String is the posture form: "always", "default" or the interval.
func (p SyncPolicy) String() string {
	switch {
	case p.Always:
		return SyncAlways
	case p.Interval == 0:
		return SyncDefault
	default:
		return p.Interval.String()
	}
}

// --sync values.
const (
	SyncAlways  = "always"
	SyncDefault = "default"
)

// ParseSync parses --sync.
func ParseSync(s string) (SyncPolicy, error) {
	switch s {
	case "", SyncAlways:
		return SyncPolicy{Always: true}, nil
	case SyncDefault:
		return SyncPolicy{}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return SyncPolicy{}, configErr("--sync %q: want always, default or a positive duration such as 10s", s)
	}
	return SyncPolicy{Interval: d}, nil
}

func (c *Config) size() int {
	if c.ClusterSize > 0 {
		return c.ClusterSize
	}
	return len(c.Routes) + 1
}

// Validate checks the config the way an operator needs it checked: every
// problem named, with what to do.
func (c *Config) Validate() error {
	if err := c.checkLimits(); err != nil {
		return err
	}
	if !nameRE.MatchString(c.Name) {
		return configErr("--node-name %q: use letters, digits, '-' or '_' (max 63)", c.Name)
	}
	if !nameRE.MatchString(c.Cluster) {
		return configErr("--cluster-name %q: use letters, digits, '-' or '_' (max 63)", c.Cluster)
	}
	ip := net.ParseIP(c.Bind)
	if ip == nil {
		return configErr("--bind %q is not an IP address", c.Bind)
	}
	switch c.BusAuth {
	case authn.Enforce:
	case authn.Off:
		if !ip.IsLoopback() {
			return configErr("--bus-auth off is refused unless --bind is a loopback address (got %s)", c.Bind)
		}
	default:
		return configErr("--bus-auth %q: want enforce or off", c.BusAuth)
	}
	if _, err := ParseSync(c.Sync); err != nil {
		return err
	}
	if c.InternalIDFile == "" {
		return configErr("--internal-id-file is required")
	}
	switch c.Store {
	case StoreKV:
	case StoreSQLite:
		if c.DBPath == "" {
			return configErr("--store sqlite needs --db FILE")
		}
	default:
		return configErr("--store %q: want kv or sqlite", c.Store)
	}
	for _, p := range []struct {
		flag string
		v    int
	}{{"--client-port", c.ClientPort}, {"--route-port", c.RoutePort}, {"--http-port", c.HTTPPort}} {
		if p.v <= 0 || p.v > 65535 {
			return configErr("%s %d is not a TCP port", p.flag, p.v)
		}
	}
	if c.ClientPort == c.RoutePort || c.ClientPort == c.HTTPPort || c.RoutePort == c.HTTPPort {
		return configErr("client, route and http ports must differ (got %d, %d, %d)", c.ClientPort, c.RoutePort, c.HTTPPort)
	}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Hostname() == "" || u.Port() == "" {
			return configErr("--routes entry %q: want nats-route://HOST:PORT", r)
		}
		if u.User != nil {
			return configErr("--routes entry %q carries credentials; the route secret comes from --route-secret-file only", r)
		}
	}
	if c.Store == StoreSQLite {
		// A SQLite node runs standalone: no routes, no route TLS, no KV.
		if err := checkPair("data-plane", c.ServerCert, c.ServerKey, c.ClientCA, x509.ExtKeyUsageServerAuth); err != nil {
			return err
		}
		return checkPortsFree(c.Bind, map[string]int{"client": c.ClientPort, "http": c.HTTPPort})
	}
	if c.KVReplicas < 1 || c.KVReplicas > c.size() {
		return configErr("--kv-replicas %d: must be between 1 and the cluster size %d", c.KVReplicas, c.size())
	}
	if c.BootstrapBudget <= 0 {
		return configErr("--bootstrap-budget must be positive")
	}
	if c.StoreDir == "" {
		return configErr("--nats-store is required")
	}
	if err := checkPair("data-plane", c.ServerCert, c.ServerKey, c.ClientCA, x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	if err := checkPair("route", c.RouteCert, c.RouteKey, c.RouteCA, x509.ExtKeyUsageClientAuth); err != nil {
		return err
	}
	if _, err := pki.ReadSecretFile(c.RouteSecretFile); err != nil {
		return configErr("%v", err)
	}
	return checkPortsFree(c.Bind, map[string]int{"client": c.ClientPort, "route": c.RoutePort, "http": c.HTTPPort})
}

func checkPair(what, cert, key, ca string, usage x509.ExtKeyUsage) error {
	for _, f := range []struct{ flag, path string }{{"certificate", cert}, {"key", key}, {"CA", ca}} {
		if f.path == "" {
			return configErr("%s %s: no file given", what, f.flag)
		}
		if _, err := os.Stat(f.path); err != nil {
			return configErr("%s %s %s: %v", what, f.flag, f.path, errors.Unwrap(err))
		}
	}
	if err := pki.VerifyFile(cert, ca, usage); err != nil {
		return configErr("%s: %v", what, err)
	}
	return nil
}

// checkPortsFree fails fast and clearly; nats-server would only log a
// listen error and keep running without the listener.
func checkPortsFree(host string, ports map[string]int) error {
	for _, name := range []string{"client", "route", "http"} {
		if _, ok := ports[name]; !ok {
			continue
		}
		addr := net.JoinHostPort(host, strconv.Itoa(ports[name]))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return configErr("%s port %s is not available: %v", name, addr, errors.Unwrap(err))
		}
		_ = l.Close()
	}
	return nil
}

// checkLimits fills unset storage limits with the defaults and checks that
// they leave room for the control plane and at least one room.
func (c *Config) checkLimits() error {
	if c.JSMaxStore == 0 {
		c.JSMaxStore = DefaultJSMaxStore
	}
	if c.JSMaxMem == 0 {
		c.JSMaxMem = DefaultJSMaxMem
	}
	if c.ControlReserve == 0 {
		c.ControlReserve = DefaultControlReserve
	}
	d := api.DefaultLimits()
	r := &c.Rooms
	if r.RoomMaxBytes == 0 {
		r.RoomMaxBytes = d.RoomMaxBytes
	}
	if r.RoomMaxMsgSize == 0 {
		r.RoomMaxMsgSize = d.RoomMaxMsgSize
	}
	if r.RoomMaxMsgs == 0 {
		r.RoomMaxMsgs = d.RoomMaxMsgs
	}
	if r.RoomQuota == 0 {
		r.RoomQuota = d.RoomQuota
	}
	if r.AdminRoomQuota == 0 {
		r.AdminRoomQuota = d.AdminRoomQuota
	}
	switch {
	case c.JSMaxStore < 0 || c.JSMaxMem < 0 || c.ControlReserve < 0:
		return configErr("--js-max-store, --js-max-mem and --control-reserve must be positive")
	case r.RoomMaxBytes < 0 || r.RoomMaxMsgs < 0 || r.RoomMaxMsgSize < 0:
		return configErr("--room-max-bytes, --room-max-msgs and --room-max-msg-size must be positive")
	case int64(r.RoomMaxMsgSize) > r.RoomMaxBytes:
		return configErr("--room-max-msg-size %d exceeds --room-max-bytes %d: no message would fit", r.RoomMaxMsgSize, r.RoomMaxBytes)
	case c.JSMaxStore-c.ControlReserve < r.RoomMaxBytes:
		return configErr("--js-max-store %d minus --control-reserve %d leaves room for no room of --room-max-bytes %d: raise --js-max-store", c.JSMaxStore, c.ControlReserve, r.RoomMaxBytes)
	}
	r.RoomBudget = c.JSMaxStore - c.ControlReserve
	return nil
}
