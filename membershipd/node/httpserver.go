package node

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTPLimits bound what one client can hold of the HTTPS listener. Zero
// fields take the defaults below.
type HTTPLimits struct {
	// ReadHeaderTimeout covers the TLS handshake and the request headers;
	// ReadTimeout the whole request, body included (bodies are at most
	// 64 KiB): a client trickling bytes is cut off.
	ReadHeaderTimeout, ReadTimeout time.Duration
	// WriteTimeout runs from the end of the headers to the end of the
	// answer: above the handlers' own budget (5 s, plus 2 s waiting for
	// every node to apply a membership).
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections that send nothing.
	IdleTimeout    time.Duration
	MaxHeaderBytes int
	// MaxConns caps open connections. The NATS client port shares the
	// process's LimitNOFILE (65536 in the unit), so HTTPS may hold only a
	// small share; past the cap new connections wait in the kernel's
	// accept queue until a slot frees (the timeouts above free them).
	MaxConns int
}

// Defaults for the HTTPS listener.
const (
	DefaultHTTPReadHeaderTimeout = 5 * time.Second
	DefaultHTTPReadTimeout       = 10 * time.Second
	DefaultHTTPWriteTimeout      = 20 * time.Second
	DefaultHTTPIdleTimeout       = 30 * time.Second
	DefaultHTTPMaxHeaderBytes    = 16 << 10
	DefaultHTTPMaxConns          = 1024
)

func (l HTTPLimits) withDefaults() HTTPLimits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	def(&l.ReadTimeout, DefaultHTTPReadTimeout)
	def(&l.WriteTimeout, DefaultHTTPWriteTimeout)
	def(&l.IdleTimeout, DefaultHTTPIdleTimeout)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultHTTPMaxConns
	}
	return l
}

// serveHTTPS serves h over TLS on l with the limits applied and returns
// the server (for Shutdown).
func serveHTTPS(l net.Listener, h http.Handler, tlsCfg *tls.Config, lim HTTPLimits, log *slog.Logger) *http.Server {
	lim = lim.withDefaults()
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	capped := &limitListener{Listener: l, sem: make(chan struct{}, lim.MaxConns), done: make(chan struct{})}
	go func() {
		if err := srv.Serve(tls.NewListener(capped, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("https server", "err", err)
		}
	}()
	return srv
}

// limitListener accepts at most cap(sem) connections at a time; a slot is
// released when the connection closes.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done: // Shutdown must not wait for a slot
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
