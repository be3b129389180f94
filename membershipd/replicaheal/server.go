package replicaheal

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerSource reads the groups from an embedded nats-server: which raft
// group backs each stream from Jsz (re-read rarely: it walks every stream
// of the server, rooms included), the leader's view of each follower from
// Raftz (one group, cheap) on every check.
func ServerSource(s *server.Server) Source { return &serverSource{s: s} }

// The stream → group map is re-read from Jsz every mapEvery, or after
// mapMissing when a stream asked for is not in it (not created yet, or
// not on this server: at N=5 an R3 bucket lives on three nodes only).
const (
	mapEvery   = 30 * time.Second
	mapMissing = 5 * time.Second
)

type streamGroup struct{ account, group string }

type serverSource struct {
	s      *server.Server
	mu     sync.Mutex
	groups map[string]streamGroup // stream → its account and raft group here
	mapped time.Time
}

// lookup maps streams to their groups here.
func (src *serverSource) lookup(want ...string) (map[string]streamGroup, error) {
	src.mu.Lock()
	defer src.mu.Unlock()
	age := time.Since(src.mapped)
	fresh := src.groups != nil && age < mapEvery
	for _, w := range want {
		if _, ok := src.groups[w]; !ok && age >= mapMissing {
			fresh = false
		}
	}
	if fresh {
		return src.groups, nil
	}
	// RaftGroups: without it Jsz leaves the stream's group name out.
	jsz, err := src.s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, RaftGroups: true})
	if err != nil {
		return nil, fmt.Errorf("jsz: %w", err)
	}
	m := map[string]streamGroup{}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.RaftGroup != "" {
				m[sd.Name] = streamGroup{account: a.Name, group: sd.RaftGroup}
			}
		}
	}
	src.groups, src.mapped = m, time.Now()
	return m, nil
}

func (src *serverSource) LedGroups(streams []string) ([]Group, error) {
	m, err := src.lookup(streams...)
	if err != nil {
		return nil, err
	}
	var out []Group
	for name, sg := range m {
		if !slices.Contains(streams, name) {
			continue
		}
		rz := src.s.Raftz(&server.RaftzOptions{AccountFilter: sg.account, GroupFilter: sg.group})
		if rz == nil {
			continue
		}
		g, ok := (*rz)[sg.account][sg.group]
		if !ok || g.State != server.Leader.String() {
			continue
		}
		grp := Group{Stream: name, Committed: g.Committed}
		for _, p := range g.Peers {
			seen := time.Duration(-1)
			if p.LastSeen != "" {
				if d, err := time.ParseDuration(p.LastSeen); err == nil {
					seen = d
				}
			}
			grp.Followers = append(grp.Followers, Follower{Name: p.Name, Index: p.LastReplicatedIndex, Seen: seen})
		}
		out = append(out, grp)
	}
	return out, nil
}

// Snapshot snapshots the local replica of stream in the account that holds
// it.
func (src *serverSource) Snapshot(stream string) error {
	m, err := src.lookup(stream)
	if err != nil {
		return err
	}
	sg, ok := m[stream]
	if !ok {
		return fmt.Errorf("snapshot %s: no local replica", stream)
	}
	if err := src.s.JetStreamSnapshotStream(sg.account, stream); err != nil {
		return fmt.Errorf("snapshot %s > %s: %w", sg.account, stream, err)
	}
	return nil
}
