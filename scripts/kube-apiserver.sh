#!/usr/bin/env bash
# Builds kube-apiserver from the k8s.io/kubernetes Go module (if not built
# yet) and prints the binary's path on standard output. Progress goes to
# standard error.
#
# The build happens in a throwaway module outside the repository, cached by
# version, so a reused machine skips it (about 12 minutes of compiling on 2
# cores; 42 minutes the first time here, downloading the modules included):
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/wsmesh/kube-apiserver-vX.Y.Z/kube-apiserver
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at
# v0.0.0 with replace directives to ./staging, which a dependent module
# cannot use; the throwaway module replaces each with its published v0.Y.Z.
# The version ldflags make clients (kubectl, client-go's discovery) see a
# real version instead of v0.0.0-master.
#
# Also installs etcd (Debian's etcd-server, /usr/bin/etcd) when it is
# missing and apt-get can be used, since the API server needs it.
#
# Usage: scripts/kube-apiserver.sh [vX.Y.Z]   (default below; env
# WSMESH_KUBE_VERSION overrides too)
set -euo pipefail

version="${1:-${WSMESH_KUBE_VERSION:-v1.37.2}}"
case "$version" in
v1.*.*) ;;
*)
	echo "kube-apiserver.sh: version must look like v1.N.M, got $version" >&2
	exit 2
	;;
esac
minor="${version#v1.}"
minor="${minor%%.*}"
patch="${version##*.}"
staging="v0.${minor}.${patch}"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/wsmesh/kube-apiserver-${version}"
bin="$cache/kube-apiserver"

if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "kube-apiserver.sh: installing etcd-server" >&2
		apt-get update -qq >&2 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >&2
	else
		echo "kube-apiserver.sh: etcd is missing; install Debian's etcd-server" >&2
	fi
fi

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

echo "kube-apiserver.sh: building kube-apiserver $version in $cache (10 to 40 minutes)" >&2
mkdir -p "$cache"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

# The staging modules k8s.io/kubernetes requires at v0.0.0.
gomod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${version}.mod"
if [ ! -f "$gomod" ]; then
	GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@${version}" >&2
fi
mods=$(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod" | sort -u)
if [ -z "$mods" ]; then
	echo "kube-apiserver.sh: found no staging modules in $gomod" >&2
	exit 1
fi

{
	echo "module wsmesh.local/kube-apiserver-build"
	echo
	echo "go $(go env GOVERSION | sed 's/^go//')"
	echo
	echo "require k8s.io/kubernetes ${version}"
	echo
	for m in $mods; do
		echo "replace $m => $m ${staging}"
	done
} >go.mod
cat >tools.go <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF

export GOFLAGS=-mod=mod
go get "k8s.io/kubernetes/cmd/kube-apiserver@${version}" >&2

pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
ldflags="$ldflags -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
CGO_ENABLED=0 go build -trimpath -tags=providerless -ldflags "$ldflags" \
	-o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
"$work/kube-apiserver" --version >&2
mv "$work/kube-apiserver" "$bin"
echo "$bin"
