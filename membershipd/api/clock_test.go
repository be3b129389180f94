package api

import (
	"testing"

	"github.com/unibus/clusterkit/membershipd/store/kv"
)

// The nonce bucket must remember a nonce longer than any node can still
// accept its timestamp, under the tolerated clock skew.
func TestNonceTTLCoversWindowAndSkew(t *testing.T) {
	for _, b := range kv.Buckets {
		if b.Name != kv.NoncesBucket {
			continue
		}
		if b.TTL < MinNonceTTL {
			t.Fatalf("%s TTL %s < 2×window (%s) + 2×max clock skew (%s) = %s: a replay can outlive its nonce",
				b.Name, b.TTL, Window, MaxClockSkew, MinNonceTTL)
		}
		return
	}
	t.Fatalf("no %s bucket", kv.NoncesBucket)
}
