#!/bin/sh
# Build helm (the Helm CLI the chart in manifests/helm is tested with) into
# tests/helm/bin/helm. The module is pinned by go.mod/go.sum (a Go `tool` of this
# module) and comes from the Go module proxy; the Go build cache makes rebuilds quick,
# and a binary already built at the pinned version is kept.
set -eu
cd "$(dirname "$0")"
version=$(awk '$1 == "helm.sh/helm/v4" { print $2; exit }' go.mod)
[ -n "$version" ] || { echo "build.sh: no helm.sh/helm/v4 version in go.mod" >&2; exit 1; }
if [ -x bin/helm ] && bin/helm version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
    echo "helm $version: bin/helm is up to date"
    exit 0
fi
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -trimpath"
export CGO_ENABLED=0
# One workspace with cert-manager and Traefik (tests/peers.work): the versions they share are
# the same, so what one of them compiled is in the Go build cache for the others.
GOWORK=$(cd .. && pwd)/peers.work
export GOWORK
go build -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$version -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  -o bin/helm helm.sh/helm/v4/cmd/helm
echo "helm $version built: $(bin/helm version --short)"
