#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time (default 10s each),
# starting from the committed seed corpora. A real failure (a failing input,
# which the engine writes under testdata/fuzz, a panic, a hang, a failed
# check) fails the run.
#
# A run whose only complaint is "context deadline exceeded" is the fuzzing
# engine's own race at the end of a time budget (golang/go#75804, fixed in
# Go 1.27): its coordinator sees the budget's deadline before its workers'
# context is cancelled and reports the deadline as the target's failure.
# Nothing is wrong with the target then; to be sure, its seed and
# testdata corpus is replayed deterministically, and that replay decides.
set -euo pipefail
fuzztime="${1:-10s}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# engine_deadline_only reports whether the failed run in $log failed with
# nothing but the engine's deadline.
engine_deadline_only() {
	grep -qx '    context deadline exceeded' "$log" &&
		! grep -qE 'Failing input written|panic:|hung or terminated|_test\.go:[0-9]+:' "$log"
}

for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $target ($fuzztime)"
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$log" 2>&1; then
			continue
		fi
		if engine_deadline_only; then
			echo "  the engine's deadline at the end of the budget (golang/go#75804), no failing input: replaying the corpus"
			if go test -count=1 -run "^${target}\$" "$pkg" >"$log" 2>&1; then
				continue
			fi
		fi
		cat "$log"
		exit 1
	done
done
echo "fuzz: all targets passed"
