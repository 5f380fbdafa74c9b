#!/bin/sh
# Build the test control plane (etcd + kube-apiserver + kube-controller-manager
# in one binary, with kubelet, kube-proxy and kube-scheduler as subcommands) into
# tests/controlplane/bin/controlplane, and the local node's pod sandbox process
# into bin/pause (see NODE.md). Modules come from the
# Go module proxy, pinned by go.mod/go.sum; the Go build cache makes rebuilds quick.
set -eu
cd "$(dirname "$0")"
# The release the modules are pinned to; /version reports it like a real apiserver.
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2; exit }' go.mod)
[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes version in go.mod" >&2; exit 1; }
minor=$(echo "$version" | cut -d. -f2)
pkg=k8s.io/component-base/version
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -trimpath"
export CGO_ENABLED=0
go build -ldflags="-s -w" -o bin/pause ./pause
exec go build \
  -ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
  -o bin/controlplane .
