package validate

import (
	"strings"
	"testing"
)

func replicasOf(stream string, nodes ...string) []StreamReplica {
	var out []StreamReplica
	for _, n := range nodes {
		out = append(out, StreamReplica{Node: n, Stream: stream, FirstSeq: 1, LastSeq: 100, Msgs: 100, Bytes: 5000, Hash: "abc"})
	}
	return out
}

func TestDivergenceClean(t *testing.T) {
	s := append(replicasOf("ROOM_a", "n1", "n2", "n3"), replicasOf("KV_UNIBUS_users", "n1", "n2", "n3")...)
	r := Divergence(s, 3)
	wantPass(t, r)
	if r.Counts["streams"] != 2 || r.Counts["replicas"] != 6 {
		t.Fatalf("counts %v", r.Counts)
	}
}

func TestDivergenceNamesTheOddReplica(t *testing.T) {
	for name, mutate := range map[string]func(*StreamReplica){
		"last seq": func(s *StreamReplica) { s.LastSeq, s.Msgs = 99, 99 },
		"hash":     func(s *StreamReplica) { s.Hash = "zzz" },
		"bytes":    func(s *StreamReplica) { s.Bytes++ },
	} {
		t.Run(name, func(t *testing.T) {
			s := replicasOf("ROOM_a", "n1", "n2", "n3")
			mutate(&s[1])
			r := Divergence(append(s, replicasOf("ROOM_b", "n1", "n2", "n3")...), 3)
			wantFail(t, r, "diverged")
			d := r.Anomalies[0].Detail
			if r.Counts["diverged"] != 1 || !strings.Contains(d, "ROOM_a") || !strings.Contains(d, "n2 has") || strings.Contains(d, "n1 has") {
				t.Fatalf("got %s: %s", r, d)
			}
		})
	}
}

func TestDivergenceMissingReplicaInvalid(t *testing.T) {
	wantInvalid(t, Divergence(replicasOf("ROOM_a", "n1", "n2"), 3))
	wantInvalid(t, Divergence(nil, 3))
	wantPass(t, Divergence(replicasOf("ROOM_a", "n1", "n2"), 0))
}
