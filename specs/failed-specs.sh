#!/usr/bin/env bash
# Prints the specs that did not pass in Ginkgo JUnit reports, with the
# start of each failure's message: `make test-vps` runs three suites, and
# a failure in the first two scrolls far above the end of a long log.
# Usage: specs/failed-specs.sh out/vps/*/junit.xml
for f in "$@"; do
  [ -f "$f" ] || continue
  awk -v file="$f" '
    /<testcase / {
      name = ""; st = ""
      if (match($0, /name="[^"]*"/)) name = substr($0, RSTART + 6, RLENGTH - 7)
      if (match($0, /status="[^"]*"/)) st = substr($0, RSTART + 8, RLENGTH - 9)
      bad = (st != "passed" && st != "skipped" && st != "pending")
      if (bad) print "NOT PASSED (" file "): " name " [" st "]"
    }
    bad && /<(failure|error) / {
      if (match($0, /message="[^"]*"/)) print "    " substr(substr($0, RSTART + 9, RLENGTH - 10), 1, 800)
      bad = 0
    }
  ' "$f"
done
