package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/e2e"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// HTTPError is a non-2xx answer of the control plane.
type HTTPError struct {
	Method, Path string
	URL          string // the base URL that answered
	Code         int    // HTTP status
	Msg          string // api.Error's message, or the start of the body
}

func (e *HTTPError) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("%s %s%s: %d %s", e.Method, e.URL, e.Path, e.Code, msg)
}

// API is a control-plane client. Every request is signed with the
// identity (identity.SignRequest, fresh nonce per attempt) and sent over
// TLS verified against the CA. A connection error or a 5xx answer moves on
// to the next URL; each call tries every URL once, starting with the one
// that answered last.
type API struct {
	urls []string
	id   *identity.Identity
	hc   *http.Client

	mu      sync.Mutex
	next    int    // index of the URL to try first
	cluster string // signed into every request; learnt from GET /v1/cluster
}

// apiTimeout bounds one request to one URL, so a hung node costs a call
// this long before the next URL is tried. It is longer than the server's
// own budget for a request (api.Budget: 5 s + 2 s for every node's ACL),
// so the client never gives up on an attempt that is still running and
// retries it elsewhere; a retry reuses the idempotency key anyway.
const apiTimeout = api.Budget + 3*time.Second

// maxBody bounds a response body read.
const maxBody = 1 << 20

// NewAPI makes a control-plane client for base URLs https://HOST:PORT.
func NewAPI(urls []string, caFile string, id *identity.Identity) (*API, error) {
	if id == nil {
		return nil, errors.New("control plane: no identity")
	}
	if len(urls) == 0 {
		return nil, errors.New("control plane: no URL")
	}
	clean := make([]string, 0, len(urls))
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, fmt.Errorf("control plane URL %q: want https://HOST:PORT", raw)
		}
		clean = append(clean, "https://"+u.Host)
	}
	if caFile == "" {
		return nil, errors.New("control plane: no CA file (TLS is always verified)")
	}
	pool, err := pki.CertPoolFromFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	tr.Proxy = nil
	return &API{urls: clean, id: id, hc: &http.Client{Transport: tr, Timeout: apiTimeout}}, nil
}

// URLs are the base URLs in use.
func (a *API) URLs() []string { return append([]string(nil), a.urls...) }

// CloseIdle closes idle keep-alive connections.
func (a *API) CloseIdle() { a.hc.CloseIdleConnections() }

// CreateRoom creates a room with idempotency key idem: the room's id is
// e2e.RoomID(caller, idem), so req carries the room key wrapped to the
// caller for that id, the signed fingerprint and the caller's grant (see
// NewRoomRequest).
func (a *API) CreateRoom(ctx context.Context, idem string, req api.CreateRoomRequest) (api.Room, error) {
	var r api.Room
	err := a.doKey(ctx, http.MethodPost, api.PathRooms, idem, req, &r)
	return r, err
}

// NewRoomRequest makes a room key and everything a create request needs
// for it: the idempotency key (which fixes the room id), the key wrapped
// to the creator, the creator's signed fingerprint and grant.
func NewRoomRequest(creator *identity.Identity, name string) (idem string, req api.CreateRoomRequest, key []byte, err error) {
	if key, err = e2e.NewRoomKey(); err != nil {
		return "", req, nil, err
	}
	idem = identity.NewIdempotencyKey()
	c, err := e2e.SignCommit(creator, key, idem)
	if err != nil {
		return "", req, nil, err
	}
	w, err := e2e.WrapRoomKey(key, c.Room, creator.SignPub())
	if err != nil {
		return "", req, nil, err
	}
	g, err := e2e.SignGrant(creator, c.Room, creator.SignPub(), w)
	if err != nil {
		return "", req, nil, err
	}
	return idem, api.CreateRoomRequest{Name: name, WrappedKey: w, KeyFingerprint: c.Fingerprint, CommitSig: c.Sig, KeySig: g.Sig}, key, nil
}

// OpenRoomKey reads the room (with its member rows) and the caller's
// wrapped key, and checks them (e2e.OpenRoomKey): a key substituted by
// anyone who can write the server's buckets is refused with an error
// wrapping e2e.ErrUntrustedKey. admins are the admins the caller trusts
// to add members (nil: none).
func (a *API) OpenRoomKey(ctx context.Context, roomID string, admins map[string]bool) ([]byte, api.Room, error) {
	room, err := a.Room(ctx, roomID)
	if err != nil {
		return nil, room, fmt.Errorf("room %s: %w", roomID, err)
	}
	if room.ID != roomID {
		return nil, room, fmt.Errorf("room %s: the server answered for room %q", roomID, room.ID)
	}
	rk, err := a.RoomKey(ctx, roomID)
	if err != nil {
		return nil, room, fmt.Errorf("room %s: get my key: %w", roomID, err)
	}
	key, err := e2e.OpenRoomKey(room.Commit(), room.Grants(), admins, rk.Grant(a.id.SignPub()), a.id)
	return key, room, err
}

// Rooms lists the caller's rooms.
func (a *API) Rooms(ctx context.Context) ([]api.Room, error) {
	var raw json.RawMessage
	if err := a.do(ctx, http.MethodGet, api.PathRooms, nil, &raw); err != nil {
		return nil, err
	}
	return decodeRooms(raw)
}

// decodeRooms accepts a bare array or an object {"rooms": [...]}.
func decodeRooms(raw json.RawMessage) ([]api.Room, error) {
	raw = bytes.TrimSpace(raw)
	var rooms []api.Room
	if len(raw) > 0 && raw[0] == '{' {
		var wrapped struct {
			Rooms []api.Room `json:"rooms"`
		}
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, fmt.Errorf("GET %s: decode: %w", api.PathRooms, err)
		}
		return wrapped.Rooms, nil
	}
	if err := json.Unmarshal(raw, &rooms); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", api.PathRooms, err)
	}
	return rooms, nil
}

// Room gets one of the caller's rooms.
func (a *API) Room(ctx context.Context, roomID string) (api.Room, error) {
	var r api.Room
	err := a.do(ctx, http.MethodGet, roomPath(api.PathRoom, roomID), nil, &r)
	return r, err
}

// RoomKey gets the caller's wrapped key of a room.
func (a *API) RoomKey(ctx context.Context, roomID string) (api.RoomKey, error) {
	var k api.RoomKey
	err := a.do(ctx, http.MethodGet, roomPath(api.PathRoomKey, roomID), nil, &k)
	return k, err
}

// AddMember adds a registered user to a room, wrapping key to it for the
// room id and signing the grant.
func (a *API) AddMember(ctx context.Context, roomID, signPub string, key []byte) error {
	w, err := e2e.WrapRoomKey(key, roomID, signPub)
	if err != nil {
		return err
	}
	g, err := e2e.SignGrant(a.id, roomID, signPub, w)
	if err != nil {
		return err
	}
	return a.do(ctx, http.MethodPost, roomPath(api.PathMembers, roomID),
		api.AddMemberRequest{SignPub: signPub, WrappedKey: w, KeySig: g.Sig}, nil)
}

// Consumer asks the control plane for the caller's pull consumer on a
// room's stream: created if missing; with from > 0, delivery (re)starts at
// stream sequence req.DeliverFromSeq. req.ClientNode names the node the
// caller's NATS connection is on (nats.Conn.ConnectedServerName), so that
// the consumer is never led from there when it is kept off the stream's
// leader.
func (a *API) Consumer(ctx context.Context, roomID string, req api.ConsumerRequest) (api.RoomConsumer, error) {
	var c api.RoomConsumer
	err := a.do(ctx, http.MethodPost, roomPath(api.PathConsumer, roomID), req, &c)
	return c, err
}

// ConsumerVia asks for the consumer reset as Consumer does, for the
// reader's resets after a failover: it asks the nodes from the skip-th
// after the preferred one, gives each at most try (0: the client's
// timeout), and sends each its own idempotency key. A reset is idempotent
// by itself (restart at from), and a node whose earlier attempt was cut
// short may still hold the first key as "still running" (409). A node
// whose request waits for an election it does not need (seen: one
// answering nothing for 10 s while another node could serve) then costs
// try, not the whole call; the handler ends with the cut request.
func (a *API) ConsumerVia(ctx context.Context, roomID string, req api.ConsumerRequest, skip int, try time.Duration) (api.RoomConsumer, error) {
	var c api.RoomConsumer
	path := roomPath(api.PathConsumer, roomID)
	body, err := json.Marshal(req)
	if err != nil {
		return c, err
	}
	cluster, err := a.clusterName(ctx)
	if err != nil {
		return c, fmt.Errorf("POST %s: %w", path, err)
	}
	a.mu.Lock()
	start := a.next + skip%len(a.urls)
	a.mu.Unlock()
	var errs []error
	for i := range a.urls {
		idx := (start + i) % len(a.urls)
		tctx, cancel := ctx, context.CancelFunc(func() {})
		if try > 0 {
			tctx, cancel = context.WithTimeout(ctx, try)
		}
		data, err := a.once(tctx, a.urls[idx], http.MethodPost, path, body, cluster, identity.NewIdempotencyKey())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return c, fmt.Errorf("POST %s: %w (%w)", path, ctx.Err(), errors.Join(append(errs, err)...))
			}
			var he *HTTPError
			if errors.As(err, &he) && he.Code < 500 {
				a.prefer(idx) // the node answered: it is up
				return c, err
			}
			errs = append(errs, err)
			continue
		}
		a.prefer(idx)
		if err := json.Unmarshal(data, &c); err != nil {
			return c, fmt.Errorf("POST %s%s: decode: %w", a.urls[idx], path, err)
		}
		return c, nil
	}
	return c, errors.Join(errs...)
}

// Me is the caller as the server knows it.
func (a *API) Me(ctx context.Context) (api.Me, error) {
	var m api.Me
	err := a.do(ctx, http.MethodGet, api.PathMe, nil, &m)
	return m, err
}

func roomPath(pattern, roomID string) string {
	return strings.Replace(pattern, "{room}", url.PathEscape(roomID), 1)
}

// SetCluster sets the cluster name signed into every request (default:
// asked of the first node that answers GET /v1/cluster).
func (a *API) SetCluster(name string) {
	a.mu.Lock()
	a.cluster = name
	a.mu.Unlock()
}

// clusterName returns the cluster name, asking the nodes once.
func (a *API) clusterName(ctx context.Context) (string, error) {
	a.mu.Lock()
	c := a.cluster
	a.mu.Unlock()
	if c != "" {
		return c, nil
	}
	var errs []error
	for _, base := range a.urls {
		rctx, cancel := context.WithTimeout(ctx, apiTimeout)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, base+api.PathCluster, nil)
		if err != nil {
			cancel()
			return "", err
		}
		resp, err := a.hc.Do(req)
		if err != nil {
			cancel()
			errs = append(errs, err)
			continue
		}
		var ci api.ClusterInfo
		err = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&ci)
		_ = resp.Body.Close()
		cancel()
		if err != nil || resp.StatusCode != http.StatusOK || ci.Cluster == "" {
			errs = append(errs, fmt.Errorf("GET %s%s: %d %v", base, api.PathCluster, resp.StatusCode, err))
			continue
		}
		a.SetCluster(ci.Cluster)
		return ci.Cluster, nil
	}
	return "", fmt.Errorf("learn the cluster name: %w", errors.Join(errs...))
}

// do sends one signed request, failing over across the URLs, and decodes a
// 2xx body into out (if not nil). A mutating request gets one idempotency
// key for all its attempts, so a retry on another node after a timeout or
// a 5xx returns the first attempt's result instead of doing it twice.
func (a *API) do(ctx context.Context, method, path string, in, out any) error {
	idem := ""
	if method != http.MethodGet {
		idem = identity.NewIdempotencyKey()
	}
	return a.doKey(ctx, method, path, idem, in, out)
}

// doKey is do with the caller's idempotency key.
func (a *API) doKey(ctx context.Context, method, path, idem string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
	}
	cluster, err := a.clusterName(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	a.mu.Lock()
	start := a.next
	a.mu.Unlock()
	var errs []error
	for i := range a.urls {
		idx := (start + i) % len(a.urls)
		data, err := a.once(ctx, a.urls[idx], method, path, body, cluster, idem)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
			}
			var he *HTTPError
			if errors.As(err, &he) && he.Code < 500 {
				a.prefer(idx) // the node answered: it is up
				return err
			}
			errs = append(errs, err)
			continue
		}
		a.prefer(idx)
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s%s: decode: %w", method, a.urls[idx], path, err)
		}
		return nil
	}
	return errors.Join(errs...)
}

func (a *API) prefer(idx int) {
	a.mu.Lock()
	a.next = idx
	a.mu.Unlock()
}

// once sends the request to one base URL: the 2xx body, or an error (an
// *HTTPError for a non-2xx answer).
func (a *API) once(ctx context.Context, base, method, path string, body []byte, cluster, idem string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, base, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set(identity.HeaderCluster, cluster)
	if idem != "" {
		req.Header.Set(identity.HeaderIdempotencyKey, idem)
	}
	if err := identity.SignRequest(req, body, a.id, time.Now()); err != nil {
		return nil, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: %w", method, base, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%s %s%s: read: %w", method, base, path, err)
	}
	if resp.StatusCode/100 != 2 {
		he := &HTTPError{Method: method, Path: path, URL: base, Code: resp.StatusCode}
		var ae api.Error
		if json.Unmarshal(data, &ae) == nil && ae.Error != "" {
			he.Msg = ae.Error
		} else {
			he.Msg = strings.TrimSpace(string(data[:min(len(data), 200)]))
		}
		return nil, he
	}
	return data, nil
}
