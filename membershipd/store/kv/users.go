package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/membershipd/store"
)

// usersBucket holds one key per user: the 64-hex sign key, valued with the
// JSON of store.User.
const usersBucket = "UNIBUS_users"

const (
	// attemptTimeout is short because a publish whose ack is lost (leader
	// stepping down) stalls for the whole timeout; a quick retry beats a
	// long wait.
	attemptTimeout = 2 * time.Second
	// listTimeout bounds one ListUsers attempt: a key watch plus one leader
	// Get per user.
	listTimeout = 15 * time.Second
	// retrySpan bounds the retries of one operation by time, not by count:
	// longer than the 4-8 s write outage after a crash or a partition
	// heals, and than the leaderless windows of a partial partition, whose
	// elections answer at once (10008) and would use up a count in ~3 s.
	// The caller's context usually ends it first (CLI 10 s, API 7 s).
	retrySpan = 15 * time.Second
)

// Users is the users store on the replicated KV bucket. It binds the bucket
// on every attempt: binding needs a reachable stream leader, and a handle
// kept from before an outage is no proof of one now.
type Users struct {
	js jetstream.JetStream
	// create is kv.Create; tests swap it to simulate a lost ack.
	create func(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error)
}

var _ store.Users = (*Users)(nil)

// NewUsers returns the KV users store. The bucket must exist (the daemon
// creates it); nothing is contacted until the first call.
func NewUsers(js jetstream.JetStream) *Users {
	return &Users{
		js: js,
		create: func(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) (uint64, error) {
			return kv.Create(ctx, key, value)
		},
	}
}

// Close implements store.Users. The connection is the caller's.
func (u *Users) Close() error { return nil }

// errConflict: another writer changed the key between our Get and our
// Update; the attempt is re-evaluated from scratch.
var errConflict = errors.New("concurrent update")

// retry runs op with a freshly bound bucket and its own timeout, retrying
// conflicts and transient failures until retrySpan or ctx runs out.
func (u *Users) retry(ctx context.Context, timeout time.Duration, op func(ctx context.Context, kv jetstream.KeyValue) error) error {
	var err error
	start := time.Now()
	attempt := 0
	for ; attempt == 0 || time.Since(start) < retrySpan; attempt++ {
		if attempt > 0 && !errors.Is(err, errConflict) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			case <-time.After(backoff(attempt)):
			}
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		var kv jetstream.KeyValue
		kv, err = u.js.KeyValue(actx, usersBucket)
		if err != nil {
			err = fmt.Errorf("bind bucket %s: %w", usersBucket, err)
		} else {
			err = op(actx, kv)
		}
		cancel()
		if err == nil || !(errors.Is(err, errConflict) || transient(err)) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
	}
	return fmt.Errorf("gave up after %d attempts in %s: %w", attempt, time.Since(start).Round(time.Millisecond), err)
}

func backoff(attempt int) time.Duration {
	return min(100*time.Millisecond<<(attempt-1), time.Second)
}

// transient reports failures worth retrying: no reply in time (the write
// may have been applied anyway), no stream leader, or the meta layer being
// unavailable.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, errWatchClosed) || errors.Is(err, errLaggingListing) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == 10008)
}

// AddUser implements store.Users: create-if-absent, or compare-and-swap over
// a revoked user.
//
// A write whose reply was lost may still have been applied, so after such
// an attempt a stored active user identical to ours (handle, role and
// AddedAt to the nanosecond) is taken as our own write rather than as
// "already registered". Without a lost reply an identical re-add is still
// refused.
func (u *Users) AddUser(ctx context.Context, in store.User) (store.User, error) {
	nu, err := store.NewUser(in, time.Now())
	if err != nil {
		return store.User{}, fmt.Errorf("add user: %w", err)
	}
	key := nu.SignPub
	val, err := json.Marshal(nu)
	if err != nil {
		return store.User{}, fmt.Errorf("add user %s: %w", key, err)
	}
	var (
		out       store.User
		ambiguous bool
	)
	err = u.retry(ctx, attemptTimeout, func(ctx context.Context, kv jetstream.KeyValue) error {
		_, err := u.create(ctx, kv, key, val)
		if err == nil {
			out = nu
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			ambiguous = ambiguous || transient(err)
			return err
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return errConflict // deleted since Create saw it; start over
		}
		if err != nil {
			return err
		}
		cur, err := decodeUser(key, e.Value())
		if err != nil {
			return err
		}
		if cur.Status != store.StatusRevoked {
			if ambiguous && sameWrite(cur, nu) {
				out = cur
				return nil
			}
			return store.AlreadyRegistered(key)
		}
		_, err = kv.Update(ctx, key, val, e.Revision())
		switch {
		case err == nil:
			out = nu
			return nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return errConflict
		default:
			ambiguous = ambiguous || transient(err)
			return err
		}
	})
	if err != nil {
		if errors.Is(err, store.ErrAlreadyRegistered) {
			return store.User{}, err
		}
		return store.User{}, fmt.Errorf("add user %s: %w", key, err)
	}
	return out, nil
}

func sameWrite(a, b store.User) bool {
	return a.Status == store.StatusActive && a.Handle == b.Handle && a.Role == b.Role && a.AddedAt.Equal(b.AddedAt)
}

// GetUser implements store.Users. Gets are not direct (AllowDirect is off),
// so the answer comes from the stream leader, never a stale replica.
func (u *Users) GetUser(ctx context.Context, signPub string) (store.User, error) {
	key, err := store.CanonicalKey(signPub)
	if err != nil {
		return store.User{}, fmt.Errorf("get user: %w", err)
	}
	var out store.User
	err = u.retry(ctx, attemptTimeout, func(ctx context.Context, kv jetstream.KeyValue) error {
		out, err = get(ctx, kv, key)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.User{}, err
		}
		return store.User{}, fmt.Errorf("get user %s: %w", key, err)
	}
	return out, nil
}

func get(ctx context.Context, kv jetstream.KeyValue, key string) (store.User, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return store.User{}, store.NotFound(key)
	}
	if err != nil {
		return store.User{}, err
	}
	return decodeUser(key, e.Value())
}

// ListUsers implements store.Users: list the keys, then Get each from the
// stream leader.
func (u *Users) ListUsers(ctx context.Context) ([]store.User, error) {
	var out []store.User
	err := u.retry(ctx, listTimeout, func(ctx context.Context, kv jetstream.KeyValue) error {
		keys, err := listKeys(ctx, kv)
		if err != nil {
			return err
		}
		out = make([]store.User, 0, len(keys))
		for _, key := range keys {
			usr, err := get(ctx, kv, key)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted since listed
			}
			if err != nil {
				return err
			}
			out = append(out, usr)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	store.SortUsers(out)
	return out, nil
}

var (
	errWatchClosed = errors.New("key watch closed before the initial keys arrived")
	// errLaggingListing: the key listing came from a replica behind the
	// stream leader (nats-server places the listing's consumer on any
	// replica, e.g. one that is still catching up after a restart), so it
	// can miss the newest keys; the listing is retried.
	errLaggingListing = errors.New("key listing came from a replica behind the stream leader")
)

// listKeys is kv.ListKeys except that (a) a watcher closed early
// (connection lost) is an error: ListKeys and Keys end the listing silently
// then, which would pass a partial list off as complete; and (b) a listing
// from a lagging replica is an error: the last revision it delivered must
// be the stream's last sequence as the leader reports it (the newest
// message of a KV stream is always some key's latest entry, so an up-to-date
// listing delivers it). An empty bucket is simply no keys (Keys would say
// ErrNoKeysFound).
func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("watch keys: %w", err)
	}
	defer stopWatch(w)
	var (
		keys []string
		last uint64
	)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("watch keys: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errWatchClosed
			}
			if e == nil {
				st, err := kv.Status(ctx) // STREAM.INFO: answered by the leader
				if err != nil {
					return nil, fmt.Errorf("bucket status: %w", err)
				}
				if leaderLast := st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq; last < leaderLast {
					return nil, fmt.Errorf("%w (listed up to revision %d, leader at %d)", errLaggingListing, last, leaderLast)
				}
				slices.Sort(keys)
				return slices.Compact(keys), nil
			}
			last = max(last, e.Revision())
			if e.Operation() == jetstream.KeyValuePut {
				keys = append(keys, e.Key())
			}
		}
	}
}

// stopWatch stops w and drains it in the background: the watcher's delivery
// callback blocks on a full channel while holding the lock its close needs.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// RevokeUser implements store.Users: Get, then compare-and-swap the revoked
// record, re-reading on a concurrent change.
func (u *Users) RevokeUser(ctx context.Context, signPub string) (store.User, error) {
	key, err := store.CanonicalKey(signPub)
	if err != nil {
		return store.User{}, fmt.Errorf("revoke user: %w", err)
	}
	var out store.User
	err = u.retry(ctx, attemptTimeout, func(ctx context.Context, kv jetstream.KeyValue) error {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return store.NotFound(key)
		}
		if err != nil {
			return err
		}
		cur, err := decodeUser(key, e.Value())
		if err != nil {
			return err
		}
		if cur.Status == store.StatusRevoked {
			out = cur
			return nil
		}
		now := time.Now().UTC()
		cur.Status, cur.RevokedAt = store.StatusRevoked, &now
		val, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		_, err = kv.Update(ctx, key, val, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errConflict
		}
		if err != nil {
			return err
		}
		out = cur
		return nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.User{}, err
		}
		return store.User{}, fmt.Errorf("revoke user %s: %w", key, err)
	}
	return out, nil
}

// decodeUser parses a stored value and checks it belongs under key and has
// a known status, so a corrupt or misplaced record is an error, not a user.
func decodeUser(key string, val []byte) (store.User, error) {
	var usr store.User
	if err := json.Unmarshal(val, &usr); err != nil {
		return store.User{}, fmt.Errorf("user %s: bad stored value: %w", key, err)
	}
	if usr.SignPub != key {
		return store.User{}, fmt.Errorf("user %s: stored value is for key %q", key, usr.SignPub)
	}
	if usr.Status != store.StatusActive && usr.Status != store.StatusRevoked {
		return store.User{}, fmt.Errorf("user %s: stored status %q unknown", key, usr.Status)
	}
	return usr, nil
}

// Watch calls fn for every user in the bucket, then for every change, until
// ctx ends (it then returns nil); ready is called once, after the current
// users. Any other return is a failure the caller should retry with a fresh
// Watch (and a fresh allowlist).
//
// To keep an allowlist built from fn failing closed, a key whose record is
// deleted, purged or unreadable is reported as a revoked user carrying only
// its SignPub: skipping it would leave a stale active entry.
func (u *Users) Watch(ctx context.Context, fn func(store.User), ready func()) error {
	return u.WatchRevisions(ctx, func(usr store.User, _ uint64, _ bool) { fn(usr) }, ready)
}

// WatchRevisions is Watch, also passing each entry's revision (its stream
// sequence) and whether it belongs to the initial load, so a caller can
// compare what it applied with LeaderLastSeq. The initial load delivers the
// last revision per key in sequence order, so until ready its highest
// revision does not mean "everything up to here"; after ready, it does.
//
// The watch is served by a consumer on a replica the server picks at
// random, which may lag the leader (or be cut off from it): see LeaderNext.
func (u *Users) WatchRevisions(ctx context.Context, fn func(u store.User, rev uint64, loading bool), ready func()) error {
	w, stop, err := u.startWatch(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch users: %w", err)
	}
	defer stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch users: watcher closed")
			}
			if e == nil {
				if initial {
					initial = false
					if ready != nil {
						ready()
					}
				}
				continue
			}
			fn(watchedUser(e), e.Revision(), initial)
		}
	}
}

// startWatch binds the bucket and starts the watcher, each within
// attemptTimeout. The watcher's own context must outlive its creation (the
// client unsubscribes when it ends), so creation is bounded by a timer that
// cancels it only if creation is still running. stop ends the watcher.
func (u *Users) startWatch(ctx context.Context) (w jetstream.KeyWatcher, stop func(), err error) {
	bctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	kv, err := u.js.KeyValue(bctx, usersBucket)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("bind bucket %s: %w", usersBucket, err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	timer := time.AfterFunc(attemptTimeout, wcancel)
	w, err = kv.WatchAll(wctx)
	if !timer.Stop() && err == nil {
		// The timer won the race: the watcher may already be closing.
		stopWatch(w)
		err = context.DeadlineExceeded
	}
	if err != nil {
		wcancel()
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			err = context.DeadlineExceeded
		}
		return nil, nil, fmt.Errorf("start watch: %w", err)
	}
	return w, func() { stopWatch(w); wcancel() }, nil
}

func watchedUser(e jetstream.KeyValueEntry) store.User {
	return entryUser(e.Key(), e.Operation() == jetstream.KeyValuePut, e.Value())
}

// entryUser is the user a bucket entry stands for; anything but a readable
// put is a revoked user (fail closed).
func entryUser(key string, put bool, val []byte) store.User {
	if put {
		if usr, err := decodeUser(key, val); err == nil {
			return usr
		}
	}
	return store.User{SignPub: key, Status: store.StatusRevoked}
}

// LeaderNext reads the first users entry at or after seq from the stream's
// leader (a non-direct get: members without a leader answer with an
// error, followers not at all). found is false when the leader holds no
// entry at or after seq. It lets the allowlist catch up with the leader
// whatever replica its watch is served from.
func LeaderNext(ctx context.Context, nc *nats.Conn, seq uint64) (usr store.User, rev uint64, found bool, err error) {
	e, found, err := LeaderNextEntry(ctx, nc, usersBucket, seq)
	if err != nil || !found {
		return store.User{}, 0, found, err
	}
	return entryUser(e.Key, e.Put, e.Value), e.Rev, true, nil
}

// Entry is one bucket entry read from its stream: a put of Value, or (Put
// false) a delete or purge marker.
type Entry struct {
	Key   string
	Rev   uint64
	Put   bool
	Value []byte
}

// LeaderNextEntry reads the first entry of bucket at or after seq from the
// stream's leader (see LeaderNext). found is false when the leader holds
// no entry at or after seq.
func LeaderNextEntry(ctx context.Context, nc *nats.Conn, bucket string, seq uint64) (e Entry, found bool, err error) {
	req, _ := json.Marshal(struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{seq, "$KV." + bucket + ".>"})
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+StreamName(bucket), req)
	if err != nil {
		return Entry{}, false, fmt.Errorf("%s stream get from %d: %w", bucket, seq, err)
	}
	var resp struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return Entry{}, false, fmt.Errorf("%s stream get: bad reply: %w", bucket, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return Entry{}, false, nil
		}
		return Entry{}, false, fmt.Errorf("%s stream get from %d: %w", bucket, seq, resp.Error)
	}
	if resp.Message == nil {
		return Entry{}, false, fmt.Errorf("%s stream get: reply without a message", bucket)
	}
	m := resp.Message
	key, ok := strings.CutPrefix(m.Subject, "$KV."+bucket+".")
	if !ok {
		return Entry{}, false, fmt.Errorf("%s stream get: unexpected subject %q", bucket, m.Subject)
	}
	e = Entry{Key: key, Rev: m.Seq, Put: true, Value: m.Data}
	if len(m.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Header)
		if err != nil {
			return Entry{}, false, fmt.Errorf("%s stream get: headers: %w", bucket, err)
		}
		if op := h.Get("KV-Operation"); op != "" {
			e.Put, e.Value = false, nil // DEL or PURGE
		}
	}
	return e, true, nil
}

// LeaderLastSeq asks the users stream for its last sequence. Only the
// stream's leader answers a stream info request (a member that sees no
// leader may answer for itself, so such answers are refused): unlike a
// direct get, a reply proves contact with the leader at the time the
// request was sent. leader names the answering leader.
func LeaderLastSeq(ctx context.Context, js jetstream.JetStream) (last uint64, leader string, err error) {
	return BucketLastSeq(ctx, js, usersBucket)
}

// BucketLastSeq is LeaderLastSeq for any bucket.
func BucketLastSeq(ctx context.Context, js jetstream.JetStream, bucket string) (last uint64, leader string, err error) {
	st, err := js.Stream(ctx, StreamName(bucket))
	if err != nil {
		return 0, "", fmt.Errorf("%s stream info: %w", bucket, err)
	}
	info := st.CachedInfo()
	if info.Cluster != nil {
		if info.Cluster.Leader == "" {
			return 0, "", fmt.Errorf("%s stream info answered without a leader", bucket)
		}
		leader = info.Cluster.Leader
	}
	return info.State.LastSeq, leader, nil
}
