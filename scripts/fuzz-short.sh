#!/usr/bin/env bash
# Runs every fuzz target of the module for a short time (default 10s each),
# starting from the committed seed corpora.
set -euo pipefail
fuzztime="${1:-10s}"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/wsmesh-fuzz.log 2>&1 || { cat /tmp/wsmesh-fuzz.log; exit 1; }
	done
done
