#!/bin/sh
# Build real Traefik v3 (its Go module, pinned by go.mod/go.sum) into tests/traefik/bin/traefik
# for the real node's SNI checks (scripts/node-e2e.sh): its kubernetesCRD provider serves the
# controller's IngressRouteTCPs, its kubernetesGateway provider the TLSRoutes.
#
# Two modules are replaced by directories this script writes into the ignored bin/:
# - github.com/go-acme/lego/v5: lego's own source (the version Traefik requires, hash
#   checked below) with the providers/dns package reduced to a NewDNSChallengeProviderByName
#   that refuses every name. That function is all Traefik uses of the package; the real one
#   imports ~200 DNS-01 providers and their cloud SDKs, most of the download and compile.
#   So this Traefik has no ACME DNS-01 challenge (HTTP-01/TLS-ALPN-01 stay), unused here.
# - github.com/traefik/traefik/dynamic/ext: a nested module of Traefik's repository that the
#   module proxy does not serve (Traefik's go.mod replaces it by ./pkg/config/dynamic/ext,
#   which is not in the module zip). In Traefik it is three empty extension structs; so here.
# Also copies the CRDs of the route kinds into bin/crds. The binary is rebuilt only when
# go.mod, go.sum, this script or the Go version change.
set -eu
cd "$(dirname "$0")"
lego_version=v5.4.1
lego_sum=h1:Jt6xAP9xQrJ3SLLGgxejfDDd3pzdrmuLCWe4oTqHHQc=
version=$(awk '{ m = $1 == "require" ? 2 : 1 } $m == "github.com/traefik/traefik/v3" { print $(m + 1); exit }' go.mod)
[ -n "$version" ] || { echo "build.sh: no github.com/traefik/traefik/v3 version in go.mod" >&2; exit 1; }

# One workspace with cert-manager and helm (tests/peers.work): the versions they share are the
# same.
GOWORK=$(cd .. && pwd)/peers.work
export GOWORK
stamp=$(cat go.mod go.sum build.sh "$GOWORK" "$GOWORK.sum" | sha256sum | cut -d' ' -f1)-$(go env GOVERSION)
if [ -x bin/traefik ] && [ "$(cat bin/.stamp 2>/dev/null)" = "$stamp" ]; then
    echo "tests/traefik/bin/traefik is up to date ($version)"
    exit 0
fi
mkdir -p bin
rm -f bin/.stamp

# lego, unpacked from the module cache (downloaded through the proxy, its hash pinned).
if [ "$(cat bin/lego/.version 2>/dev/null)" != "$lego_version" ]; then
    info=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/go-acme/lego/v5@$lego_version")
    dir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    sum=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')
    [ "$sum" = "$lego_sum" ] || { echo "build.sh: lego $lego_version has hash '$sum', want $lego_sum" >&2; exit 1; }
    rm -rf bin/lego
    cp -r "$dir" bin/lego
    chmod -R u+w bin/lego
    rm -rf bin/lego/providers/dns
    mkdir -p bin/lego/providers/dns
    cat >bin/lego/providers/dns/dns.go <<'GO'
// Package dns: the DNS-01 provider registry, without providers (tests/traefik/build.sh).
package dns

import (
	"fmt"

	"github.com/go-acme/lego/v5/challenge"
)

// NewDNSChallengeProviderByName refuses every name: this build has no DNS-01 providers.
func NewDNSChallengeProviderByName(name string) (challenge.Provider, error) {
	return nil, fmt.Errorf("DNS-01 provider %q: this Traefik (session-ssh tests) is built without DNS-01 providers", name)
}
GO
    echo "$lego_version" >bin/lego/.version
fi

mkdir -p bin/ext
cat >bin/ext/go.mod <<'MOD'
module github.com/traefik/traefik/dynamic/ext

go 1.24
MOD
cat >bin/ext/ext.go <<'GO'
// Package ext: the extension points of Traefik's dynamic configuration, empty in Traefik's
// open-source build as here.
package ext

// HTTP extends dynamic.HTTP.
type HTTP struct{}

// Router extends dynamic.Router.
type Router struct{}

// RouterIng extends a router made from ingress annotations.
type RouterIng struct{}

// ToRouter converts a RouterIng to a Router.
func (RouterIng) ToRouter() Router { return Router{} }
GO

export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly -trimpath"
export CGO_ENABLED=0
go build -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version" \
    -o bin/traefik github.com/traefik/traefik/v3/cmd/traefik
# The CRDs of the route kinds, from the modules this Traefik is built of (hashes in go.sum):
# the Gateway API's standard channel and Traefik's own.
moddir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
gw=$(moddir sigs.k8s.io/gateway-api)
tr=$(moddir github.com/traefik/traefik/v3)
[ -d "$gw/config/crd/standard" ] && [ -f "$tr/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" ] ||
    { echo "build.sh: no CRDs in the gateway-api ($gw) or traefik ($tr) module" >&2; exit 1; }
rm -rf bin/crds
mkdir -p bin/crds
cp "$gw"/config/crd/standard/*.yaml bin/crds/
cp "$tr/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" bin/crds/traefik.io_crds.yaml
chmod 644 bin/crds/*
echo "$(basename "$gw" | sed 's/@/ /') standard channel, Traefik $version" >bin/crds/VERSIONS
echo "$stamp" >bin/.stamp
echo "tests/traefik/bin/traefik: Traefik $version, $(stat -c %s bin/traefik) bytes"
