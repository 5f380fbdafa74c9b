#!/usr/bin/env bash
# Build the container images of session-ssh on this machine, without a Docker
# daemon, from the static binaries cargo builds, and check them.
#
#   scripts/build-images.sh
#
# 1. cargo builds init-sshd and session-ssh-webhook for x86_64-unknown-linux-musl
#    (static; the images are FROM scratch) and `ldd` must call them static;
# 2. buildah (vfs storage, chroot isolation: no daemon, no overlayfs, no user
#    namespaces needed) builds the "prebuilt" target of init-sshd/Containerfile
#    and webhook/Containerfile from a context holding only the binary; the
#    from-source target "image" shares the same final stage ("runtime");
# 3. checks each image: entrypoint, numeric non-root user, OCI labels, size under
#    a limit, the binary inside identical to cargo's, and that it runs from the
#    image's root filesystem alone as UID 65532 (`chroot --userspec`);
# 4. writes each image as an OCI archive to target/images/ for
#    `skopeo copy oci-archive:FILE docker://REGISTRY/NAME:TAG` (or podman load).
# 5. with the test control plane: scripts/run-webhook-image.sh runs the webhook
#    image the way manifests/ runs it against a real kube-apiserver (kubectl is the
#    control plane's own, `controlplane kubectl`). $SESSION_SSH_CONTROLPLANE set
#    (scripts/test.sh sets it) but not runnable is an error, and so is a control
#    plane without target/manifests/; only without $SESSION_SSH_CONTROLPLANE and a
#    built tests/controlplane/bin/controlplane is this step skipped.
#
# Env: IMAGE_REGISTRY (default ghcr.io/session-ssh, the names the manifests and
# the webhook's default config use), IMAGE_TAG (default: workspace version),
# SKIP_CARGO_BUILD=1 (use the binaries already built), BIN_DIR (where they are,
# default target/x86_64-unknown-linux-musl/release), MAX_INIT_SSHD_MB,
# MAX_WEBHOOK_MB (size limits). Installs Debian buildah and musl-tools when
# missing. Needs root (chroot isolation and mounting vfs layers).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-unknown-linux-musl
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/session-ssh}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
TAG=${IMAGE_TAG:-$VERSION}
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
OUT=$ROOT/target/images
# Where the binaries come from (override to package binaries built elsewhere).
BIN_DIR=${BIN_DIR:-$ROOT/target/$TARGET/release}
# A storage of our own: vfs needs no overlay support and cannot clash with a
# system-wide containers/storage configured for another driver.
BUILDAH=(buildah --storage-driver vfs --root "$OUT/storage" --runroot "$OUT/run")
export BUILDAH_ISOLATION=chroot

log() { printf '==> %s\n' "$*"; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah chroot isolation and vfs mounts)"
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
# buildah refuses to work without a signature policy; Debian's package ships
# one, a minimal container image may not.
if ! [ -f /etc/containers/policy.json ]; then
    mkdir -p /etc/containers
    echo '{"default":[{"type":"insecureAcceptAnything"}]}' >/etc/containers/policy.json
fi
mkdir -p "$OUT"

if [ "${SKIP_CARGO_BUILD:-0}" != 1 ]; then
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
        || rustup target add "$TARGET" \
        || die "Rust target $TARGET is missing and rustup could not add it"
    log "cargo build --release --target $TARGET (static, musl)"
    root=$ROOT
    # shellcheck source=scripts/test-env.sh
    . scripts/test-env.sh
    static_build
fi

size_of() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# build NAME BINARY CONTAINERFILE MAX_MB
build() {
    local name=$1 bin=$2 containerfile=$3 max_mb=$4
    local image=$REGISTRY/$name:$TAG
    local binary=$BIN_DIR/$bin
    [ -x "$binary" ] || die "$binary missing (cargo build --release --target $TARGET -p ...)"

    # A scratch image has no loader and no libc: the binary must be static.
    local ldd_out
    ldd_out=$(ldd "$binary" 2>&1 || true)
    case $ldd_out in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) die "$binary is dynamically linked: $ldd_out" ;;
    esac

    log "buildah: $image from $binary"
    local ctx=$OUT/context-$name
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp "$binary" "$ctx/$bin"
    "${BUILDAH[@]}" bud --isolation chroot --target prebuilt --layers=false \
        --build-arg "VERSION=$TAG" --build-arg "REVISION=$REVISION" \
        -f "$ROOT/$containerfile" -t "$image" "$ctx" >"$OUT/$name.build.log" 2>&1 \
        || { cat "$OUT/$name.build.log"; die "buildah bud failed for $image"; }

    # What the image says about itself.
    local inspect
    inspect=$("${BUILDAH[@]}" inspect --type image "$image")
    local failures
    failures=$(IMAGE_JSON=$inspect python3 - "$bin" "$TAG" "$max_mb" <<'EOF'
import json, os, sys
bin_name, tag, max_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
d = json.loads(os.environ["IMAGE_JSON"])
cfg = d["OCIv1"]["config"]
problems = []
if cfg.get("Entrypoint") != ["/" + bin_name]:
    problems.append(f"entrypoint {cfg.get('Entrypoint')} is not ['/{bin_name}']")
if cfg.get("User") != "65532:65532":
    problems.append(f"user {cfg.get('User')!r} is not the numeric non-root 65532:65532")
labels = cfg.get("Labels") or {}
for k in ("org.opencontainers.image.title", "org.opencontainers.image.version",
          "org.opencontainers.image.revision", "org.opencontainers.image.licenses",
          "org.opencontainers.image.source"):
    if not labels.get(k):
        problems.append(f"label {k} missing")
if labels.get("org.opencontainers.image.version") != tag:
    problems.append(f"label version {labels.get('org.opencontainers.image.version')!r} is not {tag!r}")
size = sum(l["size"] for l in json.loads(d["Manifest"])["layers"])
if size > max_mb * 1048576:
    problems.append(f"image is {size / 1048576:.1f} MiB, over the {max_mb:g} MiB limit")
print("\n".join(problems) if problems else f"OK {size}")
EOF
)
    case $failures in
        "OK "*) ;;
        *) die "$image: $failures" ;;
    esac
    local image_size=${failures#OK }

    # What the image contains: exactly cargo's binary, and it runs on its own
    # from that root filesystem as the image's user.
    local ctr mnt
    ctr=$("${BUILDAH[@]}" from --pull-never "$image")
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    local ok=1
    if ! cmp -s "$mnt/$bin" "$binary"; then
        echo "build-images: /$bin in $image differs from $binary" >&2; ok=0
    fi
    local files
    files=$(cd "$mnt" && find . -mindepth 1 | sort | tr '\n' ' ')
    if [ "$files" != "./$bin " ]; then
        echo "build-images: $image holds more than /$bin: $files" >&2; ok=0
    fi
    if ! chroot --userspec=65532:65532 "$mnt" "/$bin" --help >"$OUT/$name.help.txt" 2>&1; then
        echo "build-images: /$bin --help failed inside the image's root as 65532:" >&2
        cat "$OUT/$name.help.txt" >&2; ok=0
    fi
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    [ "$ok" = 1 ] || die "$image failed its content checks"

    local archive=$OUT/$name-$TAG.oci.tar
    rm -f "$archive"
    "${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive:$image" >/dev/null
    printf '%-42s binary %-10s image %-10s archive %s (%s)\n' "$image" \
        "$(mib "$(size_of "$binary")")" "$(mib "$image_size")" "$(mib "$(size_of "$archive")")" \
        "${archive#"$ROOT"/}"
    SUMMARY+=("$image entrypoint=/$bin user=65532:65532 size=$image_size bytes")
}

SUMMARY=()
build init-sshd init-sshd init-sshd/Containerfile "${MAX_INIT_SSHD_MB:-20}"
build webhook session-ssh-webhook webhook/Containerfile "${MAX_WEBHOOK_MB:-40}"
build gateway session-ssh-gateway webhook/gateway/Containerfile "${MAX_GATEWAY_MB:-40}"
# Earlier builds of the same tags and the intermediate "runtime" stage are dangling now.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
log "images (buildah --storage-driver vfs --root target/images/storage images):"
printf '  %s\n' "${SUMMARY[@]}"
echo "build-images: 3 images built and checked"

# Run the webhook image as the Deployment says, against a real kube-apiserver. It
# needs no kubectl on PATH (it uses `$CONTROLPLANE kubectl`), so with a control plane
# it always runs.
CONTROLPLANE=${SESSION_SSH_CONTROLPLANE:-$ROOT/tests/controlplane/bin/controlplane}
if [ -x "$CONTROLPLANE" ]; then
    for f in target/manifests/manifests.yaml target/manifests/manifests_overlays_cert-manager.yaml; do
        [ -f "$f" ] || die "$f missing: run scripts/validate-manifests.sh first (scripts/test.sh does)"
    done
    scripts/run-webhook-image.sh target/manifests/manifests.yaml
    scripts/run-webhook-image.sh target/manifests/manifests_overlays_cert-manager.yaml
elif [ -n "${SESSION_SSH_CONTROLPLANE:-}" ]; then
    die "SESSION_SSH_CONTROLPLANE=$CONTROLPLANE is not executable (tests/controlplane/build.sh builds it)"
else
    log "SKIP scripts/run-webhook-image.sh: no test control plane at $CONTROLPLANE;" \
        "build it (tests/controlplane/build.sh) or run scripts/test.sh, which does and never skips this"
fi
