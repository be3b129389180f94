package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/authn"
	"github.com/unibus/clusterkit/membershipd/node"
)

func cmdServe(args []string, _ io.Writer, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var cfg node.Config
	var routes, logLevel, busAuth string
	fs.StringVar(&cfg.Name, "node-name", "", "this node's name (required)")
	fs.StringVar(&cfg.Cluster, "cluster-name", "unibus", "cluster name")
	fs.StringVar(&cfg.Bind, "bind", "127.0.0.1", "address the client, route and HTTPS ports bind to")
	fs.IntVar(&cfg.ClientPort, "client-port", node.DefaultClientPort, "NATS client (data plane) port")
	fs.IntVar(&cfg.RoutePort, "route-port", node.DefaultRoutePort, "NATS route port")
	fs.IntVar(&cfg.HTTPPort, "http-port", node.DefaultHTTPPort, "HTTPS control-plane port (/healthz)")
	fs.StringVar(&routes, "routes", "", "comma-separated route URLs of the OTHER nodes (nats-route://HOST:PORT)")
	fs.StringVar(&cfg.Advertise, "cluster-advertise", "", "route address gossiped to peers (HOST:PORT); default: the bound one")
	fs.StringVar(&cfg.StoreDir, "nats-store", "/opt/unibus/local_files/jetstream", "JetStream store directory")
	fs.StringVar(&cfg.Store, "store", node.StoreKV, "control-plane store: kv (replicated, clustered) or sqlite (standalone, needs --db)")
	fs.StringVar(&cfg.DBPath, "db", "", "SQLite file for --store sqlite")
	fs.StringVar(&busAuth, "bus-auth", string(authn.Enforce), "enforce (nkey identities + per-subject ACL) or off (only with a loopback --bind)")
	fs.StringVar(&cfg.InternalIDFile, "internal-id-file", "/opt/unibus/secrets/internal.id", "internal service identity (nkey seed, mode 0600; created on first start)")
	fs.StringVar(&cfg.ServerCert, "tls-cert", "/opt/unibus/tls/server.crt", "data-plane server certificate (signed by the client CA)")
	fs.StringVar(&cfg.ServerKey, "tls-key", "/opt/unibus/tls/server.key", "data-plane server key")
	fs.StringVar(&cfg.ClientCA, "ca", "/opt/unibus/tls/ca.crt", "client CA: signs client certificates and the data-plane server certificate")
	fs.StringVar(&cfg.RouteCert, "route-cert", "/opt/unibus/tls/route.crt", "route certificate (signed by the route CA)")
	fs.StringVar(&cfg.RouteKey, "route-key", "/opt/unibus/tls/route.key", "route key")
	fs.StringVar(&cfg.RouteCA, "route-ca", "/opt/unibus/tls/cluster-ca.crt", "cluster route CA (separate from the client CA)")
	fs.StringVar(&cfg.RouteSecretFile, "route-secret-file", "/opt/unibus/secrets/cluster.pass", "file holding the route secret (mode 0600)")
	fs.IntVar(&cfg.KVReplicas, "kv-replicas", node.DefaultKVReplicas, "replicas of the control-plane buckets when created")
	fs.DurationVar(&cfg.BootstrapBudget, "bootstrap-budget", node.DefaultBootstrapBudget, "how long to retry opening the buckets while waiting for a quorum")
	fs.IntVar(&cfg.RoomMaxConsumers, "room-max-consumers", api.DefaultMaxConsumers, "consumer limit of each new room stream (one consumer per member)")
	cfg.JSMaxStore, cfg.JSMaxMem, cfg.ControlReserve = node.DefaultJSMaxStore, node.DefaultJSMaxMem, node.DefaultControlReserve
	cfg.Rooms = api.DefaultLimits()
	roomMsgSize := byteSize(cfg.Rooms.RoomMaxMsgSize)
	fs.Var((*byteSize)(&cfg.JSMaxStore), "js-max-store", "JetStream max_store of this node: every stream on disk, control plane included (bytes, or KiB/MiB/GiB)")
	fs.Var((*byteSize)(&cfg.JSMaxMem), "js-max-mem", "JetStream max_mem of this node")
	fs.Var((*byteSize)(&cfg.ControlReserve), "control-reserve", "part of --js-max-store rooms never get, kept for the control-plane buckets")
	fs.Var((*byteSize)(&cfg.Rooms.RoomMaxBytes), "room-max-bytes", "MaxBytes of each room stream; a full room rejects new messages")
	fs.Var(&roomMsgSize, "room-max-msg-size", "largest message a room stream takes")
	fs.Int64Var(&cfg.Rooms.RoomMaxMsgs, "room-max-msgs", cfg.Rooms.RoomMaxMsgs, "MaxMsgs of each room stream")
	fs.IntVar(&cfg.Rooms.RoomQuota, "room-quota", cfg.Rooms.RoomQuota, "rooms a member may create (-1: unlimited)")
	fs.IntVar(&cfg.Rooms.AdminRoomQuota, "admin-room-quota", cfg.Rooms.AdminRoomQuota, "rooms an admin may create (-1: unlimited)")
	fs.IntVar(&cfg.HTTP.MaxConns, "http-max-conns", node.DefaultHTTPMaxConns, "open HTTPS connections at most (the NATS port shares LimitNOFILE)")
	fs.StringVar(&cfg.Sync, "sync", node.SyncAlways, "JetStream fsync: always (every write before its ack), default (nats-server's 2 min interval: loses acked writes on power loss) or a DURATION interval")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "membershipd serve: --log-level %q: want debug, info, warn or error\n", logLevel)
		return exitBadArgs
	}
	if cfg.RoomMaxConsumers < 1 {
		fmt.Fprintf(stderr, "membershipd serve: --room-max-consumers %d: want at least 1 (one consumer per room member)\n", cfg.RoomMaxConsumers)
		return exitBadArgs
	}
	if roomMsgSize <= 0 || roomMsgSize > math.MaxInt32 {
		fmt.Fprintf(stderr, "membershipd serve: --room-max-msg-size %d: want 1 byte to 2 GiB\n", roomMsgSize)
		return exitBadArgs
	}
	cfg.Rooms.RoomMaxMsgSize = int32(roomMsgSize)
	cfg.BusAuth = authn.Mode(busAuth)
	if cfg.Name == "" {
		fmt.Fprintln(stderr, "membershipd serve: --node-name is required")
		return exitBadArgs
	}
	for _, r := range strings.Split(routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Routes = append(cfg.Routes, r)
		}
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	n, err := node.New(cfg)
	if err != nil {
		return fail(stderr, "serve", err)
	}
	if err := n.Start(); err != nil {
		return fail(stderr, "serve", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		cfg.Log.Info("signal received, stopping", "signal", s.String())
		n.Stop()
		return exitOK
	case <-n.Done():
		if err := n.Err(); err != nil {
			fmt.Fprintf(stderr, "membershipd serve: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
}

// fail prints one line and picks the exit code: 2 for bad input, 1 otherwise.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "membershipd %s: %v\n", cmd, err)
	if node.IsConfigError(err) {
		return exitBadArgs
	}
	return exitFailed
}

// byteSize is a flag of bytes: a plain number or one with a KiB, MiB or
// GiB suffix.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("want a positive number of bytes, optionally with KiB, MiB or GiB")
	}
	*b = byteSize(n * mult)
	return nil
}
