#!/bin/sh
# Build cert-manager's controller and cainjector (the module and version go.mod pins, from
# the Go module proxy) into tests/certmanager/bin/, and copy that module's CRDs
# (deploy/crds in its zip) to bin/crds/. Skipped when nothing it depends on changed.
set -eu
cd "$(dirname "$0")"
version=$(awk '$1 == "github.com/cert-manager/cert-manager" { print $2; exit }' go.mod)
[ -n "$version" ] || { echo "build.sh: no cert-manager version in go.mod" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -trimpath"
export CGO_ENABLED=0
# One workspace with Traefik and helm (tests/peers.work): the versions they share are the same.
GOWORK=$(cd .. && pwd)/peers.work
export GOWORK
stamp=bin/.inputs
inputs=$( { go version; cat build.sh go.mod go.sum "$GOWORK" "$GOWORK.sum" controller/*.go cainjector/*.go; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] \
    && [ -x bin/controller ] && [ -x bin/cainjector ] && [ -d bin/crds ]; then
    echo "cert-manager $version: bin/ up to date"
    exit 0
fi
rm -f "$stamp"
mkdir -p bin
ldflags="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$version"
go build -ldflags="$ldflags" -o bin/ ./controller ./cainjector
moddir=$(go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
rm -rf bin/crds
mkdir bin/crds
cp "$moddir"/deploy/crds/*.yaml bin/crds/
chmod u+w bin/crds/*.yaml
echo "$inputs" >"$stamp"
echo "cert-manager $version: built bin/controller bin/cainjector, $(ls bin/crds | wc -l) CRDs"
