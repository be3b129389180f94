package sshx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// maxSessions bounds the concurrent sessions (commands and SFTP) on one
// connection, below OpenSSH's default MaxSessions of 10.
const maxSessions = 8

// Client is one SSH connection to a resolved alias (through its ProxyJump
// hops, if any). It is safe for concurrent use: every Run, Sudo and file
// operation opens its own session on the shared connection.
type Client struct {
	target  Target
	log     *slog.Logger
	hops    []*ssh.Client // dial order; the last one is the target
	conn    *ssh.Client
	sem     chan struct{}
	isRoot  bool
	closeMu sync.Once
	closeE  error

	// forceSudo makes a root login behave like a non-root one (sudo -n
	// wrapping, elevated SFTP), so tests can exercise those paths.
	forceSudo bool
}

// Dial resolves alias and connects to it, verifying every hop's host key
// against known_hosts.
func Dial(ctx context.Context, alias string, o Options) (*Client, error) {
	o, explicit := o.normalized()
	cfg, err := loadConfig(o, explicit)
	if err != nil {
		return nil, err
	}
	t, err := resolve(alias, o, cfg)
	if err != nil {
		return nil, err
	}
	chain, err := resolveChain(t, o, cfg, 0)
	if err != nil {
		return nil, err
	}
	ag := openAgent(o)
	defer ag.close()

	c := &Client{target: t, log: o.Log, sem: make(chan struct{}, maxSessions), isRoot: t.User == "root"}
	var via *ssh.Client
	for i, hop := range chain {
		label := fmt.Sprintf("%q", hop.Alias)
		if i < len(chain)-1 {
			label = fmt.Sprintf("jump host %q (hop %d of %d to %q)", hop.Alias, i+1, len(chain)-1, t.Alias)
		}
		cl, err := dialHop(ctx, hop, via, label, o, ag)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.hops = append(c.hops, cl)
		via = cl
	}
	c.conn = via
	o.Log.Debug("sshx: connected", "alias", t.Alias, "user", t.User, "addr", hostPort(t), "hops", len(chain)-1)
	return c, nil
}

func hostPort(t Target) string {
	return net.JoinHostPort(t.HostName, strconv.Itoa(t.Port))
}

type handshake struct {
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
	err   error
}

// dialHop connects to hop, directly (via == nil) or through the previous
// hop's connection.
func dialHop(ctx context.Context, hop Target, via *ssh.Client, label string, o Options, ag *agentKeys) (*ssh.Client, error) {
	addr := hostPort(hop)
	name := addr // the name looked up in known_hosts
	if hop.HostKeyAlias != "" {
		name = net.JoinHostPort(hop.HostKeyAlias, strconv.Itoa(hop.Port))
	}
	log := o.Log.With("alias", hop.Alias, "addr", addr)

	kh, err := loadKnownHosts(hop.KnownHosts)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Alias = hop.Alias
		}
		return nil, err
	}
	known, err := kh.knownKeys(name)
	if err != nil {
		return nil, &Error{Alias: hop.Alias, Addr: addr, Msg: fmt.Sprintf("known_hosts lookup for %s", label), Err: err}
	}
	algos := hostKeyAlgorithms(known)
	if len(algos) == 0 {
		algos = unknownHostAlgorithms // the callback refuses whatever comes
	}
	log.Debug("sshx: dialing", "via_jump", via != nil, "host_key_algorithms", algos)

	keys := loadKeys(hop.IdentityFiles, ag, log)
	v := &hostKeyVerifier{kh: kh, label: label, alias: hop.Alias, name: name, host: hop.HostName, port: hop.Port, hostKeyAlias: hop.HostKeyAlias}

	dctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()

	var conn net.Conn
	if via == nil {
		var d net.Dialer
		conn, err = d.DialContext(dctx, "tcp", addr)
	} else {
		conn, err = via.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{Alias: hop.Alias, Addr: addr, Msg: fmt.Sprintf("dialing %s at %s cancelled", label, addr), Err: ctx.Err()}
		}
		how := "cannot reach"
		if via != nil {
			how = "the previous jump host cannot reach"
		}
		return nil, &Error{Kind: ErrUnreachable, Alias: hop.Alias, Addr: addr,
			Msg: fmt.Sprintf("%s %s at %s (timeout %s)", how, label, addr, o.ConnectTimeout), Err: err}
	}

	cfg := &ssh.ClientConfig{
		User:              hop.User,
		Auth:              keys.auth(),
		HostKeyCallback:   v.check,
		HostKeyAlgorithms: algos,
	}
	done := make(chan handshake, 1)
	go func() {
		c, chans, reqs, err := ssh.NewClientConn(conn, name, cfg)
		done <- handshake{c, chans, reqs, err}
	}()
	var h handshake
	select {
	case h = <-done:
	case <-dctx.Done():
		conn.Close()
		h = <-done
		if h.err == nil {
			h.conn.Close()
		}
		if v.err != nil {
			return nil, v.err
		}
		if ctx.Err() != nil {
			return nil, &Error{Alias: hop.Alias, Addr: addr, Msg: fmt.Sprintf("SSH handshake with %s at %s cancelled", label, addr), Err: ctx.Err()}
		}
		return nil, &Error{Kind: ErrUnreachable, Alias: hop.Alias, Addr: addr,
			Msg: fmt.Sprintf("%s at %s accepted TCP but completed no SSH handshake within %s", label, addr, o.ConnectTimeout)}
	}
	if h.err != nil {
		conn.Close()
		return nil, classifyHandshake(h.err, v, known, keys, hop, label, addr)
	}
	return ssh.NewClient(h.conn, h.chans, h.reqs), nil
}

func classifyHandshake(err error, v *hostKeyVerifier, known []knownhosts.KnownKey, keys *keySet, hop Target, label, addr string) error {
	if v.err != nil {
		return v.err
	}
	var ne *ssh.AlgorithmNegotiationError
	if errors.As(err, &ne) && ne.What == "host key" && len(known) > 0 {
		return v.noCommonHostKey(known, ne.RequestedAlgorithms)
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		return &Error{Kind: ErrAuth, Alias: hop.Alias, Addr: addr, Msg: fmt.Sprintf(
			"%s at %s refused every key for user %q (%s); authorize one of these public keys in ~%s/.ssh/authorized_keys on the host, or name the right key with IdentityFile",
			label, addr, hop.User, keys.describe(), hop.User), Err: err}
	}
	return &Error{Alias: hop.Alias, Addr: addr, Msg: fmt.Sprintf("SSH handshake with %s at %s failed", label, addr), Err: err}
}

// Target returns the resolved target (the last hop).
func (c *Client) Target() Target { return c.target }

// Close closes the connection and every jump connection under it.
func (c *Client) Close() error {
	c.closeMu.Do(func() {
		for i := len(c.hops) - 1; i >= 0; i-- {
			if err := c.hops[i].Close(); err != nil && c.closeE == nil && !errors.Is(err, net.ErrClosed) {
				c.closeE = err
			}
		}
	})
	return c.closeE
}

// acquire takes a session slot.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.sem }

// root reports whether commands run as root without sudo.
func (c *Client) root() bool { return c.isRoot && !c.forceSudo }
