#!/usr/bin/env bash
# Runs every claim of a target alone (--label-filter=claim:<id>), as an
# operator or developer runs one claim, and fails if any claim does not pass
# alone (failed, skipped, or no spec on this target). The suite is built
# once; each claim runs the compiled specs.test.
#
#   specs/each-claim.sh                       # in-process target (CI)
#   TARGET=ssh specs/each-claim.sh -nodes=... -certs=... -ssh-config=... -allow-disruptive
#
# Env: TARGET (inproc), OUT (out/each-claim), MEMBERSHIPD (bin/membershipd),
# JOBS (claims run at once, default 1).
# Extra arguments go to every run of the suite. Per-claim logs and checklists
# are in $OUT/<claim>.log and $OUT/<claim>/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
target=${TARGET:-inproc}
out=${OUT:-$root/out/each-claim}
bin=${MEMBERSHIPD:-$root/bin/membershipd}
case $out in /*) ;; *) out=$root/$out ;; esac
case $bin in /*) ;; *) bin=$root/$bin ;; esac

rm -rf "$out" && mkdir -p "$out" || exit 2
if [ ! -x "$bin" ]; then
	go build -o "$bin" ./membershipd || exit 2
fi
go tool ginkgo build -o "$out/specs.test" ./specs >"$out/build.log" 2>&1 || { cat "$out/build.log"; exit 2; }
ids=$(go run ./chaos/claims/cmd/claim-ids --target "$target") || exit 2

# state prints the claim's checklist state ("passed", "FAILED", "skipped",
# "no spec", ...) from checklist.json.
state() {
	awk -v id="$1" '
		index($0, "\"claim\": \"" id "\"") { f = 1 }
		f && match($0, /"state": "[^"]*"/) { print substr($0, RSTART + 10, RLENGTH - 11); exit }
	' "$2" 2>/dev/null
}

# one runs a claim alone, prints its line and leaves $out/<claim>.ok if
# it passed.
one() {
	local id=$1 t0 rc st
	t0=$(date +%s)
	(cd specs && "$out/specs.test" --ginkgo.label-filter="claim:$id" --ginkgo.no-color \
		-target="$target" -membershipd="$bin" -report-dir="$out/$id" "${extra[@]}") >"$out/$id.log" 2>&1
	rc=$?
	st=$(state "$id" "$out/$id/checklist.json")
	printf '%-22s %-9s %4ss\n' "$id" "${st:-no report}" "$(($(date +%s) - t0))"
	if [ "$rc" -eq 0 ] && [ "$st" = passed ]; then touch "$out/$id.ok"; fi
}

# JOBS claims at a time (default 1). Each claim has its own cluster, ports
# and report dir; 2 on 2 cores halves the wall time (CI), as most of a
# claim's time is NATS's raft timers, not CPU.
jobs=${JOBS:-1}
extra=("$@")
start=$(date +%s)
bad=()
for id in $ids; do
	while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
	one "$id" &
done
wait
for id in $ids; do
	[ -e "$out/$id.ok" ] || bad+=("$id")
done
printf 'each claim alone on %s: %d claims in %ss\n' "$target" "$(wc -w <<<"$ids")" "$(($(date +%s) - start))"
if [ ${#bad[@]} -gt 0 ]; then
	echo "FAILED alone: ${bad[*]} (logs: $out/<claim>.log)" >&2
	exit 1
fi
