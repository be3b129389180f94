package sshx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh/knownhosts"
)

// PreflightHost is one host a command is about to change.
type PreflightHost struct {
	Name    string // what the operator calls it (the node name)
	Alias   string // ssh_config alias
	Options Options
}

// HostFailure is one host that failed the preflight.
type HostFailure struct {
	Name, Alias string
	Err         error
}

// PreflightError lists every host that failed; nothing was changed on any.
type PreflightError struct {
	Failed []HostFailure
	Total  int
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	names := make([]string, len(e.Failed))
	for i, f := range e.Failed {
		names[i] = f.Name
	}
	fmt.Fprintf(&b, "preflight failed on %s (%d of %d hosts); nothing was changed on any host", strings.Join(names, ", "), len(e.Failed), e.Total)
	for _, f := range e.Failed {
		fmt.Fprintf(&b, "\n  [%s] (ssh %s): %v", f.Name, f.Alias, f.Err)
		if fix := KnownHostsFix(f.Err); fix != "" && !strings.Contains(f.Err.Error(), "ssh-keygen -R") {
			fmt.Fprintf(&b, "\n  [%s] fix: %s", f.Name, fix)
		}
	}
	return b.String()
}

// Unwrap exposes every host's error to errors.Is / errors.As.
func (e *PreflightError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

// KnownHostsFix is the known_hosts repair for a host-key error: the
// `ssh-keygen -R` line with the name as known_hosts stores it (host, or
// [host]:port off port 22). "" for other errors.
func KnownHostsFix(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Addr == "" || (!errors.Is(err, ErrHostKeyChanged) && !errors.Is(err, ErrUnknownHost)) {
		return ""
	}
	return fmt.Sprintf("verify the host's key out of band, remove the stale entry with `ssh-keygen -R '%s'` (add -f FILE for a known_hosts other than ~/.ssh/known_hosts), then add the verified key", knownhosts.Normalize(e.Addr))
}

// Preflight connects to every host at once: resolves its alias, checks its
// host key (and every jump host's), authenticates, and runs `sudo -n true`.
// A command that changes hosts calls it first and changes nothing anywhere
// unless it returns nil; the error is a *PreflightError naming each failed
// host. Connections are closed again.
func Preflight(ctx context.Context, hosts []PreflightHost) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = preflightOne(ctx, h)
		}()
	}
	wg.Wait()
	pe := &PreflightError{Total: len(hosts)}
	for i, err := range errs {
		if err != nil {
			pe.Failed = append(pe.Failed, HostFailure{Name: hosts[i].Name, Alias: hosts[i].Alias, Err: err})
		}
	}
	if len(pe.Failed) > 0 {
		return pe
	}
	return nil
}

func preflightOne(ctx context.Context, h PreflightHost) error {
	c, err := Dial(ctx, h.Alias, h.Options)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Sudo(ctx, "true", nil)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return &Error{Kind: ErrSudo, Alias: h.Alias, Addr: hostPort(c.target), Msg: fmt.Sprintf("`sudo -n true` on %q exited %d: %s", h.Alias, r.ExitCode, strings.TrimSpace(r.Stderr))}
	}
	return nil
}
