// Package raftcatchup reproduces a nats-server raft follower that never
// catches up after a partition heals (the heartbeat bucket's "Expected first
// catchup entry to be a snapshot and peerstate, will retry" loop), on three
// plain embedded nats-servers whose routes run through chaos/netproxy.
package raftcatchup
