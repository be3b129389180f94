package sshx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpServer is run under `sudo -n` for root-owned paths from a non-root
// login (Debian/Ubuntu path, as on the operator's hosts).
const sftpServer = "/usr/lib/openssh/sftp-server"

// beforeWriteHook, set only by tests, runs once the temp file has its final
// owner and mode and before any byte of content is written.
var beforeWriteHook func(tmp string)

func checkPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return &Error{Msg: fmt.Sprintf("remote path %q must be absolute and clean", p)}
	}
	return nil
}

func (c *Client) fileErr(what, p string, err error) error {
	return &Error{Alias: c.target.Alias, Addr: hostPort(c.target), Msg: fmt.Sprintf("%s %s on %q", what, p, c.target.Alias), Err: err}
}

// Stat describes path on the remote host. The SHA-256 is computed remotely
// (sha256sum); a path the login user cannot inspect is retried through
// `sudo -n`. A missing path is Exists=false, not an error.
func (c *Client) Stat(ctx context.Context, p string) (FileInfo, error) {
	fi, _, err := c.statForWrite(ctx, p)
	return fi, err
}

// statForWrite also reports whether the login user (not root) may write the
// parent directory.
func (c *Client) statForWrite(ctx context.Context, p string) (FileInfo, bool, error) {
	if err := checkPath(p); err != nil {
		return FileInfo{}, false, err
	}
	rs, err := c.statRemote(ctx, p, false)
	if err != nil {
		return FileInfo{}, false, err
	}
	dirW := rs.dirWritable
	if rs.denied && !c.isRoot {
		if rs, err = c.statRemote(ctx, p, true); err != nil {
			return FileInfo{}, false, err
		}
	}
	// As root, "denied" can only mean the parent directory is missing.
	return rs.FileInfo, dirW, nil
}

type remoteStat struct {
	FileInfo
	dirWritable bool
	denied      bool
}

// statScript prints key=value lines: dirw (parent writable by the running
// user), stat (raw mode hex, octal perms, size, user, group), sha, state.
func statScript(p string) string {
	return "P=" + shellQuote(p) + "; D=" + shellQuote(path.Dir(p)) + `
if [ -w "$D" ]; then echo dirw=1; else echo dirw=0; fi
if [ -e "$P" ] || [ -L "$P" ]; then
  if [ -f "$P" ] && [ ! -L "$P" ] && [ ! -r "$P" ]; then echo state=denied; exit 0; fi
  s=$(LC_ALL=C stat -c '%f %a %s %U %G' -- "$P") || exit 1
  echo "stat=$s"
  if [ -f "$P" ] && [ ! -L "$P" ]; then h=$(sha256sum < "$P") || exit 1; echo "sha=${h%% *}"; fi
  echo state=present
elif [ -x "$D" ]; then echo state=absent
else echo state=denied
fi
`
}

func (c *Client) statRemote(ctx context.Context, p string, privileged bool) (remoteStat, error) {
	script := statScript(p)
	var res Result
	var err error
	if privileged {
		res, err = c.Sudo(ctx, script, nil)
	} else {
		res, err = c.Run(ctx, "sh -c "+shellQuote(script), nil)
	}
	if err != nil {
		return remoteStat{}, err
	}
	if res.ExitCode != 0 {
		return remoteStat{}, c.fileErr("cannot stat", p, fmt.Errorf("exit %d: %s", res.ExitCode, strings.TrimSpace(res.Stderr)))
	}
	var rs remoteStat
	sc := bufio.NewScanner(strings.NewReader(res.Stdout))
	state := ""
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "dirw":
			rs.dirWritable = v == "1"
		case "state":
			state = v
		case "sha":
			rs.SHA256 = v
		case "stat":
			f := strings.Fields(v)
			if len(f) != 5 {
				return remoteStat{}, c.fileErr("cannot parse stat output for", p, fmt.Errorf("%q", v))
			}
			raw, err1 := strconv.ParseUint(f[0], 16, 32)
			perm, err2 := strconv.ParseUint(f[1], 8, 32)
			size, err3 := strconv.ParseInt(f[2], 10, 64)
			if err := errors.Join(err1, err2, err3); err != nil {
				return remoteStat{}, c.fileErr("cannot parse stat output for", p, err)
			}
			rs.Mode = unixMode(uint32(raw), uint32(perm))
			rs.Size = size
			rs.Owner = f[3] + ":" + f[4]
		}
	}
	switch state {
	case "present":
		rs.Exists = true
	case "absent":
	case "denied":
		rs.denied = true
	default:
		return remoteStat{}, c.fileErr("unexpected stat output for", p, fmt.Errorf("%q", res.Stdout))
	}
	return rs, nil
}

// normalizeMode turns raw Unix bits (0o4755) into os.FileMode flags
// (0o755|os.ModeSetuid), so either spelling works.
func normalizeMode(m os.FileMode) os.FileMode {
	raw := uint32(m & 0o7000)
	if raw == 0 {
		return m
	}
	return (m &^ 0o7000) | unixMode(0o100000, raw)
}

func unixMode(raw, perm uint32) os.FileMode {
	m := os.FileMode(perm & 0o777)
	if perm&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= os.ModeSticky
	}
	switch raw & 0o170000 {
	case 0o100000:
	case 0o040000:
		m |= os.ModeDir
	case 0o120000:
		m |= os.ModeSymlink
	default:
		m |= os.ModeIrregular
	}
	return m
}

// ownerMatches reports whether actual ("user:group") satisfies want ("",
// "user", "user:group" or ":group").
func ownerMatches(actual, want string) bool {
	if want == "" {
		return true
	}
	au, ag, _ := strings.Cut(actual, ":")
	wu, wg, _ := strings.Cut(want, ":")
	return (wu == "" || wu == au) && (wg == "" || wg == ag)
}

// openSFTP opens a fresh SFTP session, as the login user or (elevated) as
// root through `sudo -n sftp-server`. Cancelling ctx closes it.
func (c *Client) openSFTP(ctx context.Context, elevated bool) (*sftp.Client, func(), error) {
	if err := c.acquire(ctx); err != nil {
		return nil, nil, c.runErr("waiting for a session", err)
	}
	var (
		sc   *sftp.Client
		sess *ssh.Session
		err  error
	)
	if elevated {
		sc, sess, err = c.elevatedSFTP()
	} else if sc, err = sftp.NewClient(c.conn); err != nil {
		err = c.runErr("starting the sftp subsystem", err)
	}
	if err != nil {
		c.release()
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { sc.Close() })
	return sc, func() {
		stop()
		sc.Close()
		if sess != nil {
			sess.Close()
		}
		c.release()
	}, nil
}

// elevatedSFTP runs `sudo -n /usr/lib/openssh/sftp-server` on an exec channel
// and speaks SFTP over its stdin/stdout.
func (c *Client) elevatedSFTP() (*sftp.Client, *ssh.Session, error) {
	sess, err := c.conn.NewSession()
	if err != nil {
		return nil, nil, c.runErr("opening a session", err)
	}
	stdin, err1 := sess.StdinPipe()
	stdout, err2 := sess.StdoutPipe()
	if err := errors.Join(err1, err2); err != nil {
		sess.Close()
		return nil, nil, c.runErr("opening sftp pipes", err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	if err := sess.Start("sudo -n " + sftpServer); err != nil {
		sess.Close()
		return nil, nil, c.runErr("starting sudo -n "+sftpServer, err)
	}
	sc, err := sftp.NewClientPipe(stdout, stdin)
	if err == nil {
		return sc, sess, nil
	}
	// sudo refused or sftp-server is missing: read why once the session ends.
	waitc := make(chan error, 1)
	go func() { waitc <- sess.Wait() }()
	var werr error
	select {
	case werr = <-waitc:
	case <-time.After(5 * time.Second):
		sess.Close()
		werr = <-waitc
	}
	sess.Close()
	exit := -1
	var ee *ssh.ExitError
	if errors.As(werr, &ee) {
		exit = ee.ExitStatus()
	}
	if serr := c.sudoRefused(exit, stderr.String()); serr != nil {
		return nil, nil, serr
	}
	return nil, nil, c.runErr("starting sudo -n "+sftpServer, fmt.Errorf("%w (exit %d: %s)", err, exit, strings.TrimSpace(stderr.String())))
}

// WriteFile atomically replaces path with data, mode and (unless owner is
// "") owner ("user", "user:group" or ":group", as names). It creates a temp
// file in the same directory, gives it its owner and mode while it is still
// empty (so a secret is never readable by others, even briefly), writes and
// fsyncs it, then PosixRenames it over path. With owner "" an existing
// file's owner is kept. Paths the login user cannot write, and any chown to
// another user, go through `sudo -n /usr/lib/openssh/sftp-server`. mode may
// use os.ModeSetuid/Setgid/Sticky or the raw 0o7000 bits. When path already
// has identical content, mode and owner, nothing is written and changed is
// false.
func (c *Client) WriteFile(ctx context.Context, p string, data []byte, mode os.FileMode, owner string) (changed bool, err error) {
	if err := checkPath(p); err != nil {
		return false, err
	}
	mode = normalizeMode(mode)
	if mode&^(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		return false, c.fileErr(fmt.Sprintf("mode %v is not a plain file mode for", mode), p, nil)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	st, dirW, err := c.statForWrite(ctx, p)
	if err != nil {
		return false, err
	}
	if st.Exists && st.Mode.IsDir() {
		return false, c.fileErr("refusing to replace a directory:", p, nil)
	}
	if st.Exists && st.Mode.IsRegular() && st.SHA256 == want && st.Mode == mode && ownerMatches(st.Owner, owner) {
		c.log.Debug("sshx: unchanged", "alias", c.target.Alias, "path", p)
		return false, nil
	}

	login := c.target.User
	stUser, _, _ := strings.Cut(st.Owner, ":")
	elevated := !c.root() && (c.forceSudo || !dirW || (st.Exists && stUser != login) || (owner != "" && owner != login))

	// Resolve the owner to ids now: the chown then happens over the SFTP
	// session that runs as root (sudo sftp-server, or a root login), with no
	// second session nested inside the SFTP one.
	own := ids{uid: -1, gid: -1}
	if owner != "" && (elevated || c.root()) {
		if own, err = c.lookupOwner(ctx, owner); err != nil {
			return false, err
		}
	}

	sc, closeSFTP, err := c.openSFTP(ctx, elevated)
	if err != nil {
		return false, err
	}
	defer closeSFTP()

	tmp, err := tempName(p)
	if err != nil {
		return false, err
	}
	if err := c.writeTemp(ctx, sc, tmp, p, data, mode, owner, own, st.Exists); err != nil {
		_ = sc.Remove(tmp)
		return false, err
	}
	if err := sc.PosixRename(tmp, p); err != nil {
		_ = sc.Remove(tmp)
		return false, c.fileErr("cannot rename the temp file over", p, err)
	}
	c.log.Debug("sshx: wrote", "alias", c.target.Alias, "path", p, "bytes", len(data), "mode", mode, "elevated", elevated)
	return true, nil
}

func tempName(p string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return path.Join(path.Dir(p), "."+path.Base(p)+".sshx-"+hex.EncodeToString(b[:])+".tmp"), nil
}

func (c *Client) writeTemp(ctx context.Context, sc *sftp.Client, tmp, p string, data []byte, mode os.FileMode, owner string, own ids, exists bool) error {
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return c.fileErr("cannot create temp file", tmp, err)
	}
	defer f.Close()

	// Owner first: chown may clear setuid/setgid bits, so the mode follows.
	switch {
	case own.uid >= 0 || own.gid >= 0:
		if err := chownKeeping(sc, f, tmp, own); err != nil {
			return c.fileErr(fmt.Sprintf("cannot chown %s", owner), tmp, err)
		}
	case owner == "" && exists:
		if err := keepOwner(sc, f, p, tmp); err != nil {
			return c.fileErr("cannot give the temp file the owner of", p, err)
		}
	}
	// Mode while the file is still empty.
	if err := sc.Chmod(tmp, mode); err != nil {
		return c.fileErr("cannot chmod temp file", tmp, err)
	}
	if beforeWriteHook != nil {
		beforeWriteHook(tmp)
	}
	if err := ctx.Err(); err != nil {
		return c.fileErr("cancelled writing", p, err)
	}
	if _, err := f.Write(data); err != nil {
		return c.fileErr("cannot write temp file", tmp, err)
	}
	if err := f.Sync(); err != nil {
		var se *sftp.StatusError
		if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxOpUnsupported {
			return c.fileErr("cannot fsync temp file", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return c.fileErr("cannot close temp file", tmp, err)
	}
	return nil
}

// ids is a numeric owner; -1 leaves that part unchanged.
type ids struct{ uid, gid int }

// lookupOwner resolves "user", "user:group" or ":group" on the remote host.
func (c *Client) lookupOwner(ctx context.Context, owner string) (ids, error) {
	u, g, _ := strings.Cut(owner, ":")
	script := "U=" + shellQuote(u) + "; G=" + shellQuote(g) + `
if [ -n "$U" ]; then id -u -- "$U" || exit 1; else echo -1; fi
if [ -n "$G" ]; then x=$(getent group -- "$G") || { echo "no such group: $G" >&2; exit 1; }; echo "$x" | cut -d: -f3; else echo -1; fi
`
	res, err := c.Run(ctx, "sh -c "+shellQuote(script), nil)
	if err != nil {
		return ids{}, err
	}
	f := strings.Fields(res.Stdout)
	if res.ExitCode != 0 || len(f) != 2 {
		return ids{}, &Error{Alias: c.target.Alias, Addr: hostPort(c.target),
			Msg: fmt.Sprintf("owner %q does not exist on %q: %s", owner, c.target.Alias, strings.TrimSpace(res.Stderr))}
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil {
		return ids{}, &Error{Alias: c.target.Alias, Msg: fmt.Sprintf("cannot parse the ids of owner %q on %q", owner, c.target.Alias), Err: err}
	}
	return ids{uid: uid, gid: gid}, nil
}

// chownKeeping sets tmp's owner to own, keeping the parts that are -1.
func chownKeeping(sc *sftp.Client, f *sftp.File, tmp string, own ids) error {
	cur, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := cur.Sys().(*sftp.FileStat)
	if !ok {
		return errors.New("sftp server returned no ownership")
	}
	uid, gid := own.uid, own.gid
	if uid < 0 {
		uid = int(st.UID)
	}
	if gid < 0 {
		gid = int(st.GID)
	}
	return sc.Chown(tmp, uid, gid)
}

// keepOwner gives tmp the uid/gid of the existing file p.
func keepOwner(sc *sftp.Client, f *sftp.File, p, tmp string) error {
	old, err := sc.Lstat(p)
	if err != nil {
		return err
	}
	cur, err := f.Stat()
	if err != nil {
		return err
	}
	o, ok1 := old.Sys().(*sftp.FileStat)
	n, ok2 := cur.Sys().(*sftp.FileStat)
	if !ok1 || !ok2 {
		return errors.New("sftp server returned no ownership")
	}
	if o.UID == n.UID && o.GID == n.GID {
		return nil
	}
	return sc.Chown(tmp, int(o.UID), int(o.GID))
}

// ReadFile reads a remote file over SFTP, through sudo when the login user
// may not read it.
func (c *Client) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	data, err := c.readFile(ctx, p, c.forceSudo)
	if errors.Is(err, os.ErrPermission) && !c.root() {
		data, err = c.readFile(ctx, p, true)
	}
	if err != nil {
		return nil, c.fileErr("cannot read", p, err)
	}
	return data, nil
}

func (c *Client) readFile(ctx context.Context, p string, elevated bool) ([]byte, error) {
	sc, closeSFTP, err := c.openSFTP(ctx, elevated)
	if err != nil {
		return nil, err
	}
	defer closeSFTP()
	f, err := sc.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
