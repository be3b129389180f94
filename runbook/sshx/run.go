package sshx

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// cancelGrace is how long a cancelled command gets between SIGTERM and
// SIGKILL plus closing the session.
const cancelGrace = time.Second

// Run runs cmd through the login user's shell, feeding it stdin (nil = no
// input). A non-zero exit is reported in Result.ExitCode, not as an error;
// errors mean the command could not run or its outcome is unknown.
//
// When ctx is cancelled the command's process group gets SIGTERM, then
// SIGKILL, the session is closed, and ctx's error is returned with whatever
// output arrived. OpenSSH ignores the SSH "signal" request for root logins
// (no post-auth privilege separation), so the group is signalled with
// kill(1) from a second session: the command is prefixed with a line that
// reports the shell's pid on stderr (stripped from Result.Stderr); sshd
// makes that shell a session and process-group leader.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	if err := c.acquire(ctx); err != nil {
		return Result{}, c.runErr("waiting for a session", err)
	}
	defer c.release()

	sess, err := c.conn.NewSession()
	if err != nil {
		return Result{}, c.runErr("opening a session", err)
	}
	defer sess.Close()

	var stdout bytes.Buffer
	pc := newPIDCatcher()
	sess.Stdout = &stdout
	sess.Stderr = pc
	// Feed stdin ourselves: Session.Wait would otherwise wait for the
	// reader to hit EOF even after the command has exited.
	var in io.WriteCloser
	if stdin != nil {
		if in, err = sess.StdinPipe(); err != nil {
			return Result{}, c.runErr("opening stdin", err)
		}
	}
	start := time.Now()
	if err := sess.Start(pc.prefix() + cmd); err != nil {
		return Result{}, c.runErr("starting the command", err)
	}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(in, stdin)
			in.Close()
		}()
	}
	waitc := make(chan error, 1)
	go func() { waitc <- sess.Wait() }()

	var werr error
	select {
	case werr = <-waitc:
	case <-ctx.Done():
		c.interrupt(sess, pc.pid(), ssh.SIGTERM)
		select {
		case werr = <-waitc:
		case <-time.After(cancelGrace):
			c.interrupt(sess, pc.pid(), ssh.SIGKILL)
			sess.Close()
			select {
			case werr = <-waitc:
			case <-time.After(cancelGrace):
				// Wait has not returned: the buffers may still be written.
				return Result{ExitCode: -1}, c.runErr("command cancelled", ctx.Err())
			}
		}
		res, _ := toResult(&stdout, pc.stderr(), werr)
		return res, c.runErr("command cancelled", ctx.Err())
	}
	res, err := toResult(&stdout, pc.stderr(), werr)
	c.log.Debug("sshx: run", "alias", c.target.Alias, "exit", res.ExitCode, "signal", res.Signal, "took", time.Since(start))
	if err != nil {
		return res, c.runErr("waiting for the command", err)
	}
	return res, nil
}

// interrupt sends sig to a running command: as an SSH signal request (honoured
// by OpenSSH for non-root logins) and, when the pid is known, with kill(1) on
// its process group from a short-lived second session.
func (c *Client) interrupt(sess *ssh.Session, pid int, sig ssh.Signal) {
	_ = sess.Signal(sig)
	if pid <= 1 {
		return
	}
	ks, err := c.conn.NewSession()
	if err != nil {
		return
	}
	defer ks.Close()
	p := strconv.Itoa(pid)
	done := make(chan struct{})
	go func() {
		_ = ks.Run(fmt.Sprintf("kill -%s -- -%s 2>/dev/null || kill -%s %s 2>/dev/null; true", sig, p, sig, p))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(cancelGrace):
	}
}

// pidCatcher is the stderr writer of Run: it takes the first line, which the
// command prefix writes ("sshx-pid-<nonce> <pid>"), and keeps the rest.
type pidCatcher struct {
	mu     sync.Mutex
	marker string
	head   []byte
	done   bool
	p      int
	buf    bytes.Buffer
}

func newPIDCatcher() *pidCatcher {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &pidCatcher{marker: "sshx-pid-" + hex.EncodeToString(b[:]) + " "}
}

// prefix is prepended to the command, on its own line.
func (pc *pidCatcher) prefix() string {
	return "echo " + pc.marker + "$$ >&2\n"
}

func (pc *pidCatcher) Write(b []byte) (int, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.done {
		return pc.buf.Write(b)
	}
	pc.head = append(pc.head, b...)
	if i := bytes.IndexByte(pc.head, '\n'); i >= 0 {
		line := string(pc.head[:i])
		if pid, ok := strings.CutPrefix(line, pc.marker); ok {
			pc.p, _ = strconv.Atoi(pid)
			pc.head = pc.head[i+1:]
		}
		pc.flushHead()
	} else if !strings.HasPrefix(pc.marker, string(pc.head)) && !strings.HasPrefix(string(pc.head), pc.marker) {
		pc.flushHead() // not our line (the prefix never ran)
	}
	return len(b), nil
}

func (pc *pidCatcher) flushHead() {
	pc.buf.Write(pc.head)
	pc.head = nil
	pc.done = true
}

func (pc *pidCatcher) pid() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.p
}

// stderr returns what the command wrote to stderr, without the pid line.
func (pc *pidCatcher) stderr() string {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.done {
		pc.flushHead()
	}
	return pc.buf.String()
}

// toResult turns Session.Wait's error into a Result. Buffers are only read
// once Wait has returned (the copy goroutines are done then).
func toResult(stdout *bytes.Buffer, stderr string, werr error) (Result, error) {
	res := Result{}
	var ee *ssh.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee):
		res.ExitCode = ee.ExitStatus()
		res.Signal = ee.Signal()
		werr = nil
	default:
		var missing *ssh.ExitMissingError
		if errors.As(werr, &missing) {
			werr = errors.New("the session ended without an exit status (connection lost?)")
		}
		res.ExitCode = -1
	}
	res.Stdout, res.Stderr = stdout.String(), stderr
	return res, werr
}

func (c *Client) runErr(what string, err error) error {
	return &Error{Alias: c.target.Alias, Addr: hostPort(c.target), Msg: fmt.Sprintf("%s on %q", what, c.target.Alias), Err: err}
}

// Sudo runs cmd as root: directly when the login user is root, else as
// `sudo -n sh -c '<cmd>'`. A sudo refusal (password required, not in
// sudoers, sudo missing) is an ErrSudo error telling the operator what to
// grant; any other non-zero exit is a Result.
func (c *Client) Sudo(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	if c.root() {
		return c.Run(ctx, cmd, stdin)
	}
	res, err := c.Run(ctx, "sudo -n sh -c "+shellQuote(cmd), stdin)
	if err != nil {
		return res, err
	}
	if serr := c.sudoRefused(res.ExitCode, res.Stderr); serr != nil {
		return res, serr
	}
	return res, nil
}

// sudoRefused recognises sudo's own refusals (as opposed to the command's
// failures) by sudo's messages on stderr.
func (c *Client) sudoRefused(exit int, stderr string) error {
	u, a := c.target.User, c.target.Alias
	grant := fmt.Sprintf("grant NOPASSWD sudo to %[1]s on %[2]s, e.g. as root on %[2]s: "+
		"`echo '%[1]s ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-%[1]s && chmod 0440 /etc/sudoers.d/90-%[1]s && visudo -cf /etc/sudoers.d/90-%[1]s`", u, a)
	first := strings.TrimSpace(firstLine(stderr))
	switch {
	case exit == 0:
		return nil
	case strings.Contains(stderr, "sudo: a password is required"), strings.Contains(stderr, "sudo: a terminal is required"):
		return &Error{Kind: ErrSudo, Alias: a, Addr: hostPort(c.target), Msg: fmt.Sprintf(
			"sudo on %q asks %s for a password, and this tool only uses non-interactive sudo (sudo -n): %s", a, u, grant)}
	case strings.Contains(stderr, "is not in the sudoers file"), strings.Contains(stderr, "is not allowed to execute"),
		strings.Contains(stderr, "may not run sudo"):
		return &Error{Kind: ErrSudo, Alias: a, Addr: hostPort(c.target), Msg: fmt.Sprintf(
			"%s may not use sudo on %q (%s): %s", u, a, first, grant)}
	case exit == 127 && (strings.Contains(stderr, "sudo: not found") || strings.Contains(stderr, "sudo: command not found")):
		return &Error{Kind: ErrSudo, Alias: a, Addr: hostPort(c.target), Msg: fmt.Sprintf(
			"sudo is not installed on %q; install it (apt-get install sudo) and %s, or log in as root", a, grant)}
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// shellQuote quotes s as one POSIX shell word.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
