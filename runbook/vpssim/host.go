package vpssim

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

//go:embed assets/systemctl.sh
var systemctlScript []byte

//go:embed assets/hostinit.sh
var hostinitScript []byte

// baseEnv is the environment of every process this package starts.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
}

// readyTimeout bounds how long one host's sshd may take to answer.
const readyTimeout = 10 * time.Second

func lookPath(name string) (string, error) {
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// run runs a command with the package's environment and returns its
// combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = baseEnv
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("vpssim: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *Sim) hostDir(name string) string { return filepath.Join(s.Dir, "hosts", name) }
func (s *Sim) binDir() string             { return filepath.Join(s.Dir, "bin") }

// prepare writes everything the hosts need before they start: the client
// key, the scripts, and per host its directories, host keys and /etc files.
func (s *Sim) prepare(ctx context.Context) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, markerFile), []byte("state directory of runbook/vpssim; removed by `vps-sim down`\n"), 0o644); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	for _, h := range s.Hosts {
		if err := ensureUser(ctx, h.LoginUser); err != nil {
			return err
		}
	}
	bin := s.binDir()
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	for name, body := range map[string][]byte{"systemctl": systemctlScript, "hostinit.sh": hostinitScript} {
		if err := writeFile(filepath.Join(bin, name), body, 0o755); err != nil {
			return err
		}
	}
	// The overlay fallback for a machine without /usr/bin/systemctl: a
	// directory holding only the fake one, stacked over /usr/bin.
	if err := os.MkdirAll(filepath.Join(bin, "usrbin"), 0o755); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	if err := writeFile(filepath.Join(bin, "usrbin", "systemctl"), systemctlScript, 0o755); err != nil {
		return err
	}

	var wg sync.WaitGroup
	errs := make([]error, len(s.Hosts)+1)
	wg.Go(func() {
		_ = os.Remove(s.Identity)
		_ = os.Remove(s.Identity + ".pub")
		errs[0] = run(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vpssim-controller", "-f", s.Identity)
	})
	for i, h := range s.Hosts {
		wg.Go(func() { errs[i+1] = s.prepareHost(ctx, h) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	pub, err := os.ReadFile(s.Identity + ".pub")
	if err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	for _, h := range s.Hosts {
		ak := filepath.Join(s.hostDir(h.Name), "etc", "ssh", "authorized_keys", h.LoginUser)
		if err := writeFile(ak, pub, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// prepareHost lays out Dir/hosts/<name>:
//
//	etc/       upper layer of the host's /etc overlay (hosts, hostname, ssh/,
//	           sudoers.d/, systemd/system/ — the last one opaque, so units of
//	           the machine running the sim do not show through)
//	etc.work/  the overlay's work dir
//	opt/ home/ root/ run/ tmp/ log/   bound over /opt /home /root /run /tmp /var/log
//	console.log                       the host's sshd log (sshd -e)
func (s *Sim) prepareHost(ctx context.Context, h Host) error {
	hd := s.hostDir(h.Name)
	if err := os.RemoveAll(hd); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{"etc/ssh/authorized_keys", 0o755},
		{"etc/sudoers.d", 0o755},
		{"etc/systemd/system", 0o755},
		{"etc.work", 0o755},
		{"opt", 0o755},
		{"home", 0o755},
		{"root", 0o700},
		{"run", 0o755},
		{"tmp", 0o1777},
		{"log", 0o755},
	}
	for _, d := range dirs {
		p := filepath.Join(hd, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("vpssim: %w", err)
		}
		if err := os.Chmod(p, d.mode); err != nil { // MkdirAll obeys the umask; sticky bit needs Chmod
			return fmt.Errorf("vpssim: %w", err)
		}
	}
	// Opaque: inside the host, /etc/systemd/system holds only what the
	// deploy tool installs there (and what the fake systemctl enables).
	_ = syscall.Setxattr(filepath.Join(hd, "etc/systemd/system"), "trusted.overlay.opaque", []byte("y"), 0)

	etc := filepath.Join(hd, "etc")
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, o := range s.Hosts {
		fmt.Fprintf(&hosts, "%s\t%s\n", o.IP, o.Name)
	}
	files := map[string]string{
		"hosts":           hosts.String(),
		"hostname":        h.Name + "\n",
		"ssh/sshd_config": sshdConfig(h),
	}
	if h.LoginUser != "root" {
		// What a cloud image gives its default user.
		files["sudoers.d/90-cloud-init-users"] = fmt.Sprintf("# vpssim: the login user has passwordless sudo, as on the real host\n%s ALL=(ALL) NOPASSWD:ALL\n", h.LoginUser)
	}
	for name, body := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "sudoers.d/") {
			mode = 0o440
		}
		if err := writeFile(filepath.Join(etc, name), []byte(body), mode); err != nil {
			return err
		}
	}
	// Complete the per-host /etc/ssh and /etc/sudoers.d from the real ones,
	// for the bind-mount fallback when /etc cannot be an overlay.
	for _, c := range []struct{ src, dst string }{
		{"/etc/ssh/ssh_config", "ssh/ssh_config"},
		{"/etc/ssh/moduli", "ssh/moduli"},
	} {
		if err := copyFile(c.src, filepath.Join(etc, c.dst)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if ents, err := os.ReadDir("/etc/sudoers.d"); err == nil {
		for _, e := range ents {
			if e.Type().IsRegular() {
				if err := copyFile(filepath.Join("/etc/sudoers.d", e.Name()), filepath.Join(etc, "sudoers.d", e.Name())); err != nil {
					return err
				}
			}
		}
	}
	if h.LoginUser != "root" {
		u, err := user.Lookup(h.LoginUser)
		if err != nil {
			return fmt.Errorf("vpssim: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		home := filepath.Join(hd, "home", h.LoginUser)
		if err := os.Mkdir(home, 0o750); err != nil {
			return fmt.Errorf("vpssim: %w", err)
		}
		if err := os.Chown(home, uid, gid); err != nil {
			return fmt.Errorf("vpssim: %w", err)
		}
	}

	// Host keys of all three types: the host offers ECDSA and RSA too, while
	// known_hosts will hold only the ed25519 one.
	var wg sync.WaitGroup
	types := []string{"ed25519", "ecdsa", "rsa"}
	errs := make([]error, len(types))
	for i, t := range types {
		wg.Go(func() {
			args := []string{"-q", "-t", t, "-N", "", "-C", "root@" + h.Name, "-f", filepath.Join(etc, "ssh", "ssh_host_"+t+"_key")}
			if t == "rsa" {
				args = append(args, "-b", "3072")
			}
			errs[i] = run(ctx, "ssh-keygen", args...)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sshdConfig(h Host) string {
	return fmt.Sprintf(`# sshd of vpssim host %[1]s (PID 1 of its PID namespace)
ListenAddress %[2]s
Port %[3]d
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_rsa_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /etc/ssh/authorized_keys/%%u .ssh/authorized_keys
UsePAM no
PidFile /run/sshd.pid
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
# chaos runs open many sessions at once
MaxStartups 200:30:400
MaxSessions 100
`, h.Name, h.IP, h.Port())
}

// ensureUser makes sure a non-root login user exists on the real system
// (the hosts' /etc is an overlay on it) with a password field that does not
// lock it: sshd without PAM refuses an account whose password starts with
// "!", which is what a plain useradd writes; "*" means "no password".
func ensureUser(ctx context.Context, name string) error {
	if name == "root" {
		return nil
	}
	if _, err := user.Lookup(name); err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return fmt.Errorf("vpssim: user %s: %w", name, err)
		}
		if err := run(ctx, "useradd", "-m", "-s", "/bin/bash", "-p", "*", name); err != nil {
			return err
		}
	}
	f, err := os.Open("/etc/shadow")
	if err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 3)
		if len(fields) >= 2 && fields[0] == name && strings.HasPrefix(fields[1], "!") {
			return run(ctx, "usermod", "-p", "*", name)
		}
	}
	return sc.Err()
}

// launch starts host h's PID 1 and waits until its sshd answers. The outer
// process (unshare) keeps a copy of the machine lock open for the host's
// lifetime.
func (s *Sim) launch(ctx context.Context, h Host, lock *os.File) error {
	hd := s.hostDir(h.Name)
	console, err := os.OpenFile(filepath.Join(hd, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	defer console.Close()
	fmt.Fprintf(console, "=== vpssim: boot %s at %s\n", h.Name, time.Now().UTC().Format(time.RFC3339Nano))
	// --kill-child: if the outer unshare dies, its child (the host's PID 1)
	// gets SIGKILL, and with it the whole PID namespace.
	cmd := exec.Command("ip", "netns", "exec", netnsName(h.Name),
		"unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private",
		"/bin/bash", filepath.Join(s.binDir(), "hostinit.sh"), hd, s.binDir())
	cmd.Env = baseEnv
	cmd.Stdout, cmd.Stderr = console, console
	cmd.ExtraFiles = []*os.File{lock} // fd 3 in the child
	// Own session: the host survives the end of the process that booted it
	// and the signals of its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("vpssim: boot %s: %w", h.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap it if we outlive it

	fail := func(err error) error {
		_ = cmd.Process.Kill() // takes the host with it (--kill-child)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		return err
	}
	// A jump-only host refuses the controller: its readiness is its sshd
	// listening, seen in its namespace's socket table.
	ready := func() bool { return sshReady(h.IP, h.Port()) }
	if h.JumpVia != "" {
		ready = func() bool { return listening(cmd.Process.Pid, h.Port()) }
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if ready() {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("vpssim: host %s died while booting: %s", h.Name, tail(filepath.Join(hd, "console.log"), 15))
		case <-ctx.Done():
			return fail(fmt.Errorf("vpssim: boot %s: %w", h.Name, ctx.Err()))
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("vpssim: host %s: sshd not answering on %s:%d after %s: %s", h.Name, h.IP, h.Port(), readyTimeout, tail(filepath.Join(hd, "console.log"), 15)))
		}
	}
}

// listening reports whether a TCP socket listens on port in the network
// namespace of pid (its /proc/PID/net/tcp; state 0A is LISTEN).
func listening(pid, port int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/tcp")
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", port)
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			return true
		}
	}
	return false
}

// sshReady reports whether an SSH server banner comes back from ip:port.
func sshReady(ip string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 300*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "SSH-"
}

// writeClientFiles writes the client side as a real fleet's operator has
// it: known_hosts with each host's ed25519 key under its IP, name and alias
// ([host]:port for a non-22 port), hashed with `ssh-keygen -H`; ssh_config
// with the defaults and an Include of ssh_config.d/, which holds one file
// per host (its Port, and ProxyJump for a jump-only host).
func (s *Sim) writeClientFiles(ctx context.Context) error {
	var kh, cfg strings.Builder
	fmt.Fprintf(&cfg, `# Written by runbook/vpssim for the simulated unibus hosts (state dir %[1]s).
# Use: ssh -F %[2]s magnus true
# The host blocks are in %[3]s/, one file per host.
Include %[3]s/*.conf

Host *
  IdentityFile %[4]s
  IdentitiesOnly yes
  UserKnownHostsFile %[5]s
  HashKnownHosts yes
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
`, s.Dir, s.SSHConfig, s.SSHConfigD, s.Identity, s.KnownHosts)
	if err := os.RemoveAll(s.SSHConfigD); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	for i, h := range s.Hosts {
		pub, err := os.ReadFile(filepath.Join(s.hostDir(h.Name), "etc", "ssh", "ssh_host_ed25519_key.pub"))
		if err != nil {
			return fmt.Errorf("vpssim: %w", err)
		}
		f := strings.Fields(string(pub))
		if len(f) < 2 {
			return fmt.Errorf("vpssim: host %s: bad host key", h.Name)
		}
		names := []string{h.IP, h.Name}
		patterns := h.Alias
		if h.Alias != h.Name {
			names = append(names, h.Alias)
			patterns += " " + h.Name
		}
		if h.Port() != 22 {
			for j, n := range names {
				names[j] = "[" + n + "]:" + strconv.Itoa(h.Port())
			}
		}
		fmt.Fprintf(&kh, "%s %s %s\n", strings.Join(names, ","), f[0], f[1])
		var hb strings.Builder
		fmt.Fprintf(&hb, "# vpssim host %s\nHost %s\n  HostName %s\n  User %s\n  Port %d\n", h.Name, patterns, h.IP, h.LoginUser, h.Port())
		if h.JumpVia != "" {
			via, err := s.mustHost(h.JumpVia)
			if err != nil {
				return err
			}
			fmt.Fprintf(&hb, "  # sshd accepts connections only from %s\n  ProxyJump %s\n", via.Name, via.Alias)
		}
		if err := writeFile(filepath.Join(s.SSHConfigD, fmt.Sprintf("%02d-%s.conf", i+1, h.Alias)), []byte(hb.String()), 0o644); err != nil {
			return err
		}
	}
	if err := writeFile(s.KnownHosts, []byte(kh.String()), 0o644); err != nil {
		return err
	}
	if err := run(ctx, "ssh-keygen", "-q", "-H", "-f", s.KnownHosts); err != nil {
		return err
	}
	if err := os.Remove(s.KnownHosts + ".old"); err != nil { // the unhashed copy ssh-keygen keeps
		return fmt.Errorf("vpssim: %w", err)
	}
	if err := os.Chmod(s.KnownHosts, 0o644); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	return writeFile(s.SSHConfig, []byte(cfg.String()), 0o644)
}

// nsPIDs lists the live (not zombie) processes in network namespace ns.
func nsPIDs(ns string) ([]int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+ns, &want); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if st.Ino == want.Ino && st.Dev == want.Dev && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// alive reports whether pid exists and is not a zombie: some sandboxes reap
// orphans late, so kill(pid, 0) alone lies.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// InitPID returns the PID (as seen from the machine) of host's PID 1, its
// sshd; an error if the host is down.
func (s *Sim) InitPID(host string) (int, error) {
	h, err := s.mustHost(host)
	if err != nil {
		return 0, err
	}
	pids, err := nsPIDs(netnsName(h.Name))
	if err != nil {
		return 0, fmt.Errorf("vpssim: host %s: %w", h.Name, err)
	}
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(strings.TrimPrefix(line, "NSpid:")); strings.HasPrefix(line, "NSpid:") && len(f) == 2 && f[1] == "1" {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("vpssim: host %s is down", h.Name)
}

// Exec runs cmd with bash -c as root inside host (its network, mount, UTS
// and PID namespaces). It is for tests and debugging; the path under test
// is SSH. err wraps *exec.ExitError on a non-zero exit.
func (s *Sim) Exec(ctx context.Context, host, cmd string) (stdout, stderr string, err error) {
	pid, err := s.InitPID(host)
	if err != nil {
		return "", "", err
	}
	// Entering the mount namespace also moves root and cwd to the host's /.
	c := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(pid), "--net", "--mount", "--uts", "--pid",
		"--", "/bin/bash", "-c", cmd)
	c.Env = append(append([]string(nil), baseEnv...), "TERM=dumb")
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	if err := c.Run(); err != nil {
		return o.String(), e.String(), fmt.Errorf("vpssim: exec on %s: %q: %w: %s", host, cmd, err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), nil
}

// Kill crashes host: SIGKILL to its PID 1 takes every process of the host
// with it (like pulling the plug). Its disks (Dir/hosts/<name>) stay.
func (s *Sim) Kill(host string) error {
	pid, err := s.InitPID(host)
	if err != nil {
		return err
	}
	h, _ := s.Host(host)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("vpssim: kill %s: %w", host, err)
	}
	return waitNoPIDs(context.Background(), []string{netnsName(h.Name)}, 10*time.Second)
}

// Boot starts a host that is down (after Kill): a fresh PID namespace and
// /run, the same disks; units enabled with systemctl start again, as at a
// real boot.
func (s *Sim) Boot(ctx context.Context, host string) error {
	h, err := s.mustHost(host)
	if err != nil {
		return err
	}
	if _, err := s.InitPID(host); err == nil {
		return fmt.Errorf("vpssim: host %s is already up", h.Name)
	}
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	defer lock.Close()
	// Hold the machine lock if no other host holds it any more; otherwise
	// the other hosts do and this descriptor is just along for the ride.
	_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	return s.launch(ctx, h, lock)
}

// waitNoPIDs waits until no live process remains in the namespaces.
func waitNoPIDs(ctx context.Context, nss []string, limit time.Duration) error {
	return sweep(ctx, nss, limit, false)
}

// killAll SIGKILLs every process in the namespaces until none is left
// (again on every pass: a host still booting can fork in between).
func killAll(ctx context.Context, nss []string, limit time.Duration) error {
	return sweep(ctx, nss, limit, true)
}

func sweep(ctx context.Context, nss []string, limit time.Duration, kill bool) error {
	deadline := time.Now().Add(limit)
	for {
		var left []string
		for _, ns := range nss {
			pids, err := nsPIDs(ns)
			if err != nil || len(pids) == 0 {
				continue
			}
			left = append(left, fmt.Sprintf("%s: %v", ns, pids))
			if kill {
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("vpssim: processes still alive after SIGKILL: %s", strings.Join(left, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(path string, body []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	if err := os.WriteFile(path, body, mode); err != nil {
		return fmt.Errorf("vpssim: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile keeps an existing file's mode
		return fmt.Errorf("vpssim: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, b, st.Mode().Perm())
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no " + path + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n  " + strings.Join(lines, "\n  ")
}
