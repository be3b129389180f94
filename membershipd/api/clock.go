package api

import "time"

// MaxClockSkew is the clock difference between any two nodes (and the
// stream leader of UNIBUS_nonces, whoever it is) that anti-replay
// tolerates. Two clocks are involved: the ±Window timestamp check runs on
// the node that serves the request, while a nonce expires when the nonces
// stream's current leader, on its own clock, sees the message older than
// the bucket TTL (the stamp came from the leader that stored it).
//
// A replay succeeds only if the nonce has expired while some node still
// accepts the timestamp. Worst case, with every pairwise node skew at most
// S: the first node accepts a timestamp up to Window (plus S) off, a new
// leader ahead by S expires the nonce S early, and the replay goes to a
// node behind by S. The nonce outlives every acceptance as long as
//
//	NonceTTL >= 2*Window + 2*MaxClockSkew
//
// (10 min >= 60 s + 4 min: holds; TestNonceTTLCoversWindowAndSkew checks
// it against the bucket's real TTL). Run NTP: a skew beyond MaxClockSkew
// reopens the replay window.
const MaxClockSkew = 2 * time.Minute

// MinNonceTTL is the shortest nonce TTL that keeps replays out under
// MaxClockSkew.
const MinNonceTTL = 2*Window + 2*MaxClockSkew
