#!/usr/bin/env bash
# Builds kube-apiserver and etcd for controller-runtime's envtest from the Go
# module proxy (tools/envtest/*) and prints the directory to use as
# KUBEBUILDER_ASSETS. The binaries are cached outside the repository, keyed by
# the versions pinned in the tool modules, so each machine builds them once
# (a cold build took 6 minutes here on 2 cores; an earlier trial reported
# 2.8 GB of memory, not measured here).
#
#   scripts/envtest-assets.sh    build when missing, print the directory
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools/envtest"
pinned() { # module version as required in a go.mod, either require form
	awk -v m="$2" '$1==m{print $2} $1=="require" && $2==m{print $3}' "$1" | head -1
}
k8s="$(pinned "$tools/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd="$(pinned "$tools/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s" && -n "$etcd" ]] || { echo "envtest-assets: cannot read pinned versions from $tools/*/go.mod" >&2; exit 2; }

base="${GREENFLOW_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/greenflow/envtest}"
dir="$base/k8s-$k8s-etcd-$etcd-$(go env GOOS)-$(go env GOARCH)"

if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$base"
exec 9>"$base/.lock"
flock 9
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]]; then # built while we waited
	echo "$dir"
	exit 0
fi

tmp="$(mktemp -d "$base/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "envtest-assets: building etcd $etcd (once per machine) ..." >&2
(cd "$tools/etcd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' \
	-o "$tmp/etcd" go.etcd.io/etcd/server/v3) >&2
echo "envtest-assets: etcd built in $((SECONDS - start)) s; building kube-apiserver $k8s (the long part) ..." >&2
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$k8s -X $vpkg.gitMajor=$(echo "${k8s#v}" | cut -d. -f1) -X $vpkg.gitMinor=$(echo "${k8s#v}" | cut -d. -f2) -X $vpkg.gitTreeState=clean"
(cd "$tools/kube-apiserver" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" \
	-o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
mkdir -p "$dir"
mv "$tmp/etcd" "$tmp/kube-apiserver" "$dir/"
echo "envtest-assets: built in $((SECONDS - start)) s into $dir" >&2
echo "$dir"
