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

// The room budget arithmetic: rooms × per-room bytes never exceed
// max_store minus the control reserve.
func TestRoomBudgetArithmetic(t *testing.T) {
	l := Limits{RoomMaxBytes: 16 << 20, RoomBudget: (8 << 30) - (1 << 30)}
	if got, want := l.MaxRooms(), int64(448); got != want {
		t.Fatalf("MaxRooms %d, want %d", got, want)
	}
	if l.MaxRooms()*l.RoomMaxBytes > l.RoomBudget {
		t.Fatal("rooms overrun the budget")
	}
	if (Limits{}).MaxRooms() != -1 {
		t.Fatal("no budget must mean unbounded")
	}
	cfg := RoomStreamConfig("0123456789abcdef", 3, DefaultMaxConsumers, Limits{})
	if cfg.MaxBytes != DefaultRoomMaxBytes || cfg.MaxMsgSize != DefaultRoomMaxMsgSize || cfg.MaxMsgs != DefaultRoomMaxMsgs {
		t.Fatalf("room stream without limits: %+v", cfg)
	}
	if cfg.Discard.String() != "DiscardNew" {
		t.Fatalf("a full room must reject new messages, got %s", cfg.Discard)
	}
}
