// Package vpssim simulates the three production VPS (magnus, homer,
// datardos) on one Linux machine, so the deploy tool and the ssh chaos
// target can be exercised end to end without touching a real host.
//
// Each simulated host is a network namespace (unibus-<name>) joined by a
// veth pair to a bridge (unibr0, 10.77.0.1/24, the "controller") and, inside
// it, a private mount+UTS+PID namespace whose PID 1 is a real OpenSSH sshd.
// A host has its own hostname, IP, host keys, /etc (an overlay on the real
// one: users, sudoers, units and /etc/hosts are per host), /opt, /home,
// /root, /run, /tmp, /var/log and process table; /usr/bin/systemctl is a
// small bash stand-in (see assets/systemctl.sh) that runs the unit files the
// deploy tool installs. Killing the host's sshd kills the whole host.
//
// The client side is the real thing, set up the way real fleets are:
// Dir/ssh_config holds only defaults and an Include of Dir/ssh_config.d/,
// one file per host naming it by its ssh alias; known_hosts is hashed
// (ssh-keygen -H, HashKnownHosts) and holds only each host's ed25519 key
// while the hosts also offer ECDSA and RSA keys (the Go host-key-algorithm
// trap of golang/go#29286 is reproduced on purpose). One host's sshd
// listens on a non-22 port, and one host accepts SSH only from another host
// (its jump host, ProxyJump): iptables in its namespace refuses SSH from
// anywhere else, the controller included, while its cluster ports stay open.
//
// Everything needs root. Traffic stays on the bridge: the namespaces have no
// default route. Only one sim can be up on a machine at a time (the bridge,
// subnet and namespace names are global); Down removes every trace.
package vpssim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Fixed network layout of the sim. The subnet is reserved for it: no other
// traffic is ever sent by this package.
const (
	Bridge     = "unibr0"       // bridge in the root namespace
	Controller = "10.77.0.1"    // the bridge's address, where tests and tools run
	Subnet     = "10.77.0.0/24" // hosts' addresses must be inside it
	DefaultDir = "/run/unibus-vpssim"

	netnsPrefix = "unibus-" // network namespace of host h: unibus-<h>
	vethPrefix  = "unibv-"  // root-side veth end of host h: unibv-<h>
	lockPath    = "/run/unibus-vpssim.lock"
	markerFile  = ".vpssim"
	stateFile   = "sim.json"
)

// Host is one simulated VPS.
type Host struct {
	Name      string `json:"name"`       // hostname inside the host (magnus)
	Alias     string `json:"alias"`      // ssh alias in ssh_config (dd for datardos)
	IP        string `json:"ip"`         // its address on the bridge
	LoginUser string `json:"login_user"` // the only user whose key is authorized (root or a sudo user)
	// SSHPort is the port sshd listens on; 0 means 22.
	SSHPort int `json:"ssh_port,omitempty"`
	// JumpVia names the host (Name) through which this host is reached: its
	// sshd accepts connections only from that host's IP, and ssh_config
	// reaches it with ProxyJump. Empty: reachable directly.
	JumpVia string `json:"jump_via,omitempty"`
}

// Port returns the host's sshd port.
func (h Host) Port() int {
	if h.SSHPort == 0 {
		return 22
	}
	return h.SSHPort
}

// Sim describes a running simulation; it is written to Dir/sim.json by Up.
type Sim struct {
	Dir        string    `json:"dir"`
	Hosts      []Host    `json:"hosts"`
	SSHConfig  string    `json:"ssh_config"`   // Dir/ssh_config: defaults and an Include of SSHConfigD
	SSHConfigD string    `json:"ssh_config_d"` // Dir/ssh_config.d: one file with a Host block per host
	KnownHosts string    `json:"known_hosts"`  // Dir/known_hosts: only each host's ed25519 key, hashed
	Identity   string    `json:"identity"`     // Dir/id_ed25519: client key, no passphrase
	StartedAt  time.Time `json:"started_at"`   // when Up got hold of the machine
}

// DefaultHosts mirrors the production topology (runbook/nodes.env) on the
// sim's subnet: magnus logs in as root, homer and datardos (alias dd) as
// ubuntu with passwordless sudo. homer's sshd listens on 2222; datardos is
// reachable only through magnus (ProxyJump).
func DefaultHosts() []Host {
	return []Host{
		{Name: "magnus", Alias: "magnus", IP: "10.77.0.11", LoginUser: "root"},
		{Name: "homer", Alias: "homer", IP: "10.77.0.12", LoginUser: "ubuntu", SSHPort: 2222},
		{Name: "datardos", Alias: "dd", IP: "10.77.0.13", LoginUser: "ubuntu", JumpVia: "magnus"},
	}
}

// Host returns the host called name (its Name or its Alias).
func (s *Sim) Host(name string) (Host, bool) {
	for _, h := range s.Hosts {
		if h.Name == name || h.Alias == name {
			return h, true
		}
	}
	return Host{}, false
}

func (s *Sim) mustHost(name string) (Host, error) {
	h, ok := s.Host(name)
	if !ok {
		names := make([]string, 0, len(s.Hosts))
		for _, h := range s.Hosts {
			names = append(names, h.Name)
		}
		return Host{}, fmt.Errorf("vpssim: no host %q (hosts: %s)", name, strings.Join(names, ", "))
	}
	return h, nil
}

// Load reads back the description of the sim running from dir ("" means
// DefaultDir). It does not check that the hosts are alive (see Status).
func Load(dir string) (*Sim, error) {
	dir, err := cleanDir(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vpssim: no sim in %s (run `vps-sim up --dir %s`)", dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("vpssim: %w", err)
	}
	var s Sim
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("vpssim: %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// validate checks the host list before anything is created.
func validate(hosts []Host) error {
	if len(hosts) == 0 {
		return errors.New("vpssim: no hosts")
	}
	_, subnet, _ := net.ParseCIDR(Subnet)
	owner := map[string]string{} // name, alias or IP -> host that uses it
	veths := map[string]bool{}
	for _, h := range hosts {
		for _, n := range []string{h.Name, h.Alias} {
			if !nameRE.MatchString(n) {
				return fmt.Errorf("vpssim: host name/alias %q: want %s", n, nameRE)
			}
		}
		for _, k := range []string{h.Name, h.Alias, h.IP} {
			if o, dup := owner[k]; dup && o != h.Name {
				return fmt.Errorf("vpssim: %s is used by hosts %s and %s", k, o, h.Name)
			}
			owner[k] = h.Name
		}
		ip := net.ParseIP(h.IP).To4()
		if ip == nil || !subnet.Contains(ip) || ip[3] == 0 || ip[3] == 1 || ip[3] == 255 {
			return fmt.Errorf("vpssim: host %s: IP %q must be an address in %s other than .0, .1 (controller) and .255", h.Name, h.IP, Subnet)
		}
		if h.LoginUser == "" || !regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`).MatchString(h.LoginUser) {
			return fmt.Errorf("vpssim: host %s: bad login user %q", h.Name, h.LoginUser)
		}
		v := vethName(h.Name)
		if veths[v] {
			return fmt.Errorf("vpssim: host names collide once truncated to an interface name (%s)", v)
		}
		veths[v] = true
		if h.SSHPort < 0 || h.SSHPort > 65535 {
			return fmt.Errorf("vpssim: host %s: bad ssh port %d", h.Name, h.SSHPort)
		}
	}
	for _, h := range hosts {
		if h.JumpVia == "" {
			continue
		}
		var via *Host
		for i := range hosts {
			if hosts[i].Name == h.JumpVia {
				via = &hosts[i]
			}
		}
		if via == nil || via.Name == h.Name || via.JumpVia != "" {
			return fmt.Errorf("vpssim: host %s: jump host %q must be another host of the sim that is reached directly", h.Name, h.JumpVia)
		}
	}
	return nil
}

// cleanDir resolves the state directory and refuses places the hosts
// bind-mount over (the init script would hide its own files) and /tmp
// (sshd refuses key files under a world-writable parent).
func cleanDir(dir string) (string, error) {
	if dir == "" {
		dir = DefaultDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("vpssim: dir %q: %w", dir, err)
	}
	if strings.ContainsAny(abs, " \t\n\"'\\") {
		return "", fmt.Errorf("vpssim: dir %q: no blanks or quotes please (it is written into ssh_config)", abs)
	}
	if abs == "/" || abs == "/run" {
		return "", fmt.Errorf("vpssim: dir %s: use a directory of its own (default %s)", abs, DefaultDir)
	}
	for _, bad := range []string{"/tmp", "/var/tmp", "/etc", "/opt", "/home", "/root", "/var/log", "/usr", "/proc", "/sys", "/dev"} {
		if abs == bad || strings.HasPrefix(abs, bad+"/") {
			return "", fmt.Errorf("vpssim: dir %s: must not be under %s (the hosts mount over it, or it is world-writable); use e.g. %s", abs, bad, DefaultDir)
		}
	}
	return abs, nil
}

func vethName(host string) string {
	n := vethPrefix + host
	if len(n) > 15 { // IFNAMSIZ-1
		n = n[:15]
	}
	return n
}

func netnsName(host string) string { return netnsPrefix + host }

// acquireLock takes the machine-wide lock. The lock's open file is handed to
// every host's outer process (unshare), so it stays held while any host is
// alive, even after the process that ran Up exits. If another sim holds it,
// Up waits while ctx allows — a ctx without deadline fails at once.
func acquireLock(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vpssim: lock: %w", err)
	}
	_, hasDeadline := ctx.Deadline()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vpssim: lock %s: %w", lockPath, err)
		}
		if !hasDeadline || ctx.Err() != nil {
			owner, _ := os.ReadFile(lockPath)
			f.Close()
			o := strings.TrimSpace(string(owner))
			if o == "" {
				return nil, errors.New("vpssim: another vps-sim up is in progress on this machine")
			}
			return nil, fmt.Errorf("vpssim: a sim is already up (state dir %s); run `go run ./runbook vps-sim down --dir %s` first", o, o)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return f, nil
}

// Up creates the hosts and starts their sshd, then writes ssh_config,
// known_hosts and sim.json under dir ("" means DefaultDir). It refuses when
// a sim is already up (in dir or elsewhere) or leftovers of one remain; run
// Down first. On failure it removes whatever it created.
func Up(ctx context.Context, dir string, hosts []Host) (_ *Sim, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("vpssim: needs root (network namespaces, mounts, sshd)")
	}
	if hosts == nil {
		hosts = DefaultHosts()
	}
	if err := validate(hosts); err != nil {
		return nil, err
	}
	dir, err = cleanDir(dir)
	if err != nil {
		return nil, err
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return nil, fmt.Errorf("vpssim: a sim is already up in %s; run `go run ./runbook vps-sim down --dir %s` first", dir, dir)
	}
	prevOwner := ""
	if b, err := os.ReadFile(lockPath); err == nil {
		prevOwner = strings.TrimSpace(string(b))
	}
	lock, err := acquireLock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.Close() // the hosts' processes keep their own copy
	if err := checkLeftovers(prevOwner); err != nil {
		return nil, err
	}
	if err := lock.Truncate(0); err == nil { // for the error messages of others
		_, _ = lock.WriteAt([]byte(dir+"\n"), 0)
	}

	s := &Sim{
		Dir:        dir,
		Hosts:      append([]Host(nil), hosts...),
		SSHConfig:  filepath.Join(dir, "ssh_config"),
		SSHConfigD: filepath.Join(dir, "ssh_config.d"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		Identity:   filepath.Join(dir, "id_ed25519"),
		StartedAt:  time.Now().UTC(),
	}
	// From here on, a failure removes what this Up created (and only
	// then: the errors above must not touch another sim).
	defer func() {
		if err != nil {
			if terr := teardown(context.Background(), dir, hosts, true); terr != nil {
				err = fmt.Errorf("%w\n(cleaning up after it: %v; run `vps-sim down --dir %s`)", err, terr, dir)
			}
		}
	}()
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	if err := setupNetwork(hosts); err != nil {
		return nil, err
	}
	if err := s.restrictSSH(); err != nil {
		return nil, err
	}
	errs := make(chan error, len(hosts))
	for _, h := range hosts {
		go func() { errs <- s.launch(ctx, h, lock) }()
	}
	var firstErr error
	for range hosts {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := s.writeClientFiles(ctx); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, stateFile), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("vpssim: %w", err)
	}
	return s, nil
}

// Down stops every host, deletes the namespaces, veths and bridge and
// removes the state dir's files. It works from partial state (a failed Up,
// a missing sim.json, hosts already dead) and is a no-op when nothing is up.
func Down(ctx context.Context, dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("vpssim: needs root")
	}
	dir, err := cleanDir(dir)
	if err != nil {
		return err
	}
	var hosts []Host
	if s, err := Load(dir); err == nil {
		hosts = s.Hosts
	}
	return teardown(ctx, dir, hosts, false)
}

func checkTools() error {
	var missing []string
	for _, t := range []string{"ip", "unshare", "nsenter", "iptables", "ssh-keygen", "/usr/sbin/sshd", "setpriv", "flock"} {
		if strings.HasPrefix(t, "/") {
			if _, err := os.Stat(t); err != nil {
				missing = append(missing, t)
			}
		} else if _, err := lookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("vpssim: missing %s (apt-get install -y openssh-server openssh-client iptables sudo)", strings.Join(missing, ", "))
	}
	return nil
}
