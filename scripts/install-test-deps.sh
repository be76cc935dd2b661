#!/usr/bin/env bash
# Installs what wsmesh's tests use as real peers, skipping what is present:
# the Python websockets library (the guide's client and server), HAProxy and
# nginx (peer proxies), tmux (terminal-driven tests) and iproute2.
set -euo pipefail

missing=()
/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)

# h2spec, the HTTP/2 conformance suite, is a Go module: built once into
# /tmp/h2specbin, where internal/h2tunnel's conformance test looks.
if [ ! -x /tmp/h2specbin/h2spec ] && ! command -v h2spec >/dev/null 2>&1; then
	echo "installing h2spec"
	GOBIN=/tmp/h2specbin go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
fi

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
echo "installing test dependencies: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
