package replicaheal

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerSource reads the groups from an embedded nats-server: the stream's
// raft group from Jsz, the leader's view of each follower from Raftz.
func ServerSource(s *server.Server) Source { return serverSource{s} }

type serverSource struct{ s *server.Server }

func (src serverSource) LedGroups(streams []string) ([]Group, error) {
	// RaftGroups: without it Jsz leaves the stream's group name out.
	jsz, err := src.s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, RaftGroups: true})
	if err != nil {
		return nil, fmt.Errorf("jsz: %w", err)
	}
	var out []Group
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if !slices.Contains(streams, sd.Name) || sd.RaftGroup == "" {
				continue
			}
			rz := src.s.Raftz(&server.RaftzOptions{AccountFilter: a.Name, GroupFilter: sd.RaftGroup})
			if rz == nil {
				continue
			}
			for _, groups := range *rz {
				g, ok := groups[sd.RaftGroup]
				if !ok || g.State != server.Leader.String() {
					continue
				}
				grp := Group{Stream: sd.Name, Committed: g.Committed}
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
		}
	}
	return out, nil
}

// Snapshot snapshots the local replica of stream in the account that holds
// it (the one Jsz reports it under).
func (src serverSource) Snapshot(stream string) error {
	jsz, err := src.s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return fmt.Errorf("jsz: %w", err)
	}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == stream {
				if err := src.s.JetStreamSnapshotStream(a.Name, stream); err != nil {
					return fmt.Errorf("snapshot %s > %s: %w", a.Name, stream, err)
				}
				return nil
			}
		}
	}
	return fmt.Errorf("snapshot %s: no local replica", stream)
}
