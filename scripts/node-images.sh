#!/usr/bin/env bash
# The images of the node end-to-end tests, built on this machine (buildah, vfs,
# no daemon, no registry) and imported into the containerd of scripts/cluster.sh:
#
#   scripts/node-images.sh           # build what changed, import into the cluster if it is up
#   scripts/node-images.sh build [NAME...]  # build only (no cluster needed), all or the named images
#   scripts/node-images.sh import    # import the built archives (cluster must be up)
#
#   localhost/session-ssh/webhook:dev          webhook/Containerfile, target prebuilt
#   localhost/session-ssh/gateway:dev          webhook/gateway/Containerfile, target prebuilt
#   localhost/session-ssh/init-sshd:dev        init-sshd/Containerfile, target prebuilt
#   localhost/session-ssh/jupyter-session:dev  Debian bookworm (mmdebstrap) + python3 venv
#       with jupyterhub + jupyterlab from PyPI, rsync; no sshd, no sftp-server, no passwd entry
#       for UID 1000; USER 1000:100, HOME /home/jovyan, its own PATH and
#       SESSION_IMAGE_VAR=from-image; ENTRYPOINT tini -g --, CMD jupyterhub-singleuser
#       (the docker-stacks layout: KubeSpawner's args replace CMD, keep the entrypoint)
#   localhost/session-ssh/minimal:dev          busybox-static only: no /etc/passwd, no
#       shell profile; USER 1000:100; sleeps
#   localhost/session-ssh/named-user:dev       minimal + /etc/passwd, USER jovyan (a name,
#       UID 1000): the kubelet cannot verify runAsNonRoot for it
#
# Cached by content: each image's inputs (binary, Containerfile, recipe text, pinned
# versions) are hashed; .work/images/NAME-HASH.tar (an OCI archive) is reused while
# the hash is unchanged, and an archive is imported only when containerd does not
# already hold that manifest digest under the name. .work/images survives
# `cluster.sh down`. Binaries come from BIN_DIR (default
# target/x86_64-unknown-linux-musl/release; build them or copy them there first).
#
# Env: BIN_DIR, JUPYTERHUB_VERSION, JUPYTERLAB_VERSION, DEBIAN_SUITE (bookworm).
# Needs root (buildah chroot isolation, vfs mounts, mmdebstrap). Installs Debian
# buildah, mmdebstrap, busybox-static when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/.work/images
BIN_DIR=${BIN_DIR:-$ROOT/target/x86_64-unknown-linux-musl/release}
SOCK=$ROOT/.work/cluster/containerd/containerd.sock
PREFIX=localhost/session-ssh
JUPYTERHUB_VERSION=${JUPYTERHUB_VERSION:-6.1.1}
JUPYTERLAB_VERSION=${JUPYTERLAB_VERSION:-4.6.6}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
# Bump to rebuild every image after a change in how they are made.
RECIPE_VERSION=1
BUILDAH=(buildah --storage-driver vfs --root "$OUT/storage" --runroot "$OUT/run")
export BUILDAH_ISOLATION=chroot
# A find-links directory of the host's pip that does not exist only adds warnings
# (also inside the image's chroot, which inherits the environment).
[ -d "${PIP_FIND_LINKS:-/nonexistent}" ] || unset PIP_FIND_LINKS

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'node-images: %s\n' "$*" >&2
    exit 1
}

prereqs() {
    [ "$(id -u)" = 0 ] || die "needs root (buildah chroot isolation, vfs mounts, mmdebstrap)"
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
    [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ! ldd /bin/busybox >/dev/null 2>&1 ||
        missing+=(busybox-static)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed (apt-get update first?)"
    fi
    if ! [ -f /etc/containers/policy.json ]; then
        mkdir -p /etc/containers
        echo '{"default":[{"type":"insecureAcceptAnything"}]}' >/etc/containers/policy.json
    fi
    mkdir -p "$OUT"
}

sha() { sha256sum | cut -c1-16; }

# commit_archive CTR IMAGE ARCHIVE: commit a working container and write the OCI archive.
commit_archive() {
    local c=$1 image=$2 archive=$3
    "${BUILDAH[@]}" commit --quiet --rm "$c" "$image" >/dev/null
    "${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.part:$image"
    mv "$archive.part" "$archive"
}

# --- webhook and init-sshd: the repository's Containerfiles, target prebuilt ----------
hash_prebuilt() { # NAME BINARY CONTAINERFILE
    { echo "$RECIPE_VERSION $1"; sha256sum <"$BIN_DIR/$2"; cat "$3"; declare -f build_prebuilt; } | sha
}
build_prebuilt() { # NAME BINARY CONTAINERFILE ARCHIVE
    local name=$1 bin=$2 file=$3 archive=$4 ctx
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin missing: build it (README Development) or set BIN_DIR"
    ctx=$(mktemp -d "$OUT/ctx.XXXXXX")
    cp "$BIN_DIR/$bin" "$ctx/$bin"
    "${BUILDAH[@]}" bud --quiet --layers=false --target prebuilt -f "$ROOT/$file" \
        --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        -t "$PREFIX/$name:dev" "$ctx" >/dev/null
    rm -rf "$ctx"
    "${BUILDAH[@]}" push --quiet "$PREFIX/$name:dev" "oci-archive:$archive.part:$PREFIX/$name:dev"
    mv "$archive.part" "$archive"
}

# --- jupyter-session: Debian + PyPI jupyterhub/jupyterlab ------------------------------
hash_jupyter() {
    { echo "$RECIPE_VERSION $DEBIAN_SUITE $JUPYTERHUB_VERSION $JUPYTERLAB_VERSION"; declare -f build_jupyter; } | sha
}
build_jupyter() { # ARCHIVE
    local archive=$1 work=$OUT/jupyter-build wheels c mnt
    rm -rf "$work"
    mkdir -p "$work"
    wheels=$work/wheels
    # Wheels are fetched by the host's pip (its index and CA settings); the image's
    # pip installs them offline. Host and image are both CPython 3.11 on glibc.
    log "jupyter-session: pip download jupyterhub==$JUPYTERHUB_VERSION jupyterlab==$JUPYTERLAB_VERSION"
    python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
        --platform manylinux_2_28_x86_64 --platform linux_x86_64 --implementation cp \
        -d "$wheels" "jupyterhub==$JUPYTERHUB_VERSION" "jupyterlab==$JUPYTERLAB_VERSION" >&2 ||
        die "pip download failed"
    log "jupyter-session: mmdebstrap $DEBIAN_SUITE (python3, venv, tini, ca-certificates)"
    # No openssh-server/-sftp-server, no user for UID 1000: the image stays a
    # "any image" test for session-ssh.
    mmdebstrap --quiet --variant=apt --format=directory \
        --include=python3,python3-venv,tini,ca-certificates,less,procps,rsync \
        --customize-hook="mkdir -p \"\$1/tmp/wheels\" && cp -a $wheels/. \"\$1/tmp/wheels/\"" \
        --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
        --customize-hook="chroot \"\$1\" /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels jupyterhub==$JUPYTERHUB_VERSION jupyterlab==$JUPYTERLAB_VERSION" \
        --customize-hook='chroot "$1" /opt/venv/bin/pip freeze >"$1/opt/venv/pip-freeze.txt"' \
        --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1/root/.cache"' \
        --customize-hook='mkdir -p "$1/home/jovyan" && chown 1000:100 "$1/home/jovyan" && chmod 0755 "$1/home/jovyan"' \
        "$DEBIAN_SUITE" "$work/rootfs" http://deb.debian.org/debian >&2 || die "mmdebstrap failed"
    ! grep -q '^[^:]*:[^:]*:1000:' "$work/rootfs/etc/passwd" || die "jupyter-session: passwd has UID 1000"
    ! [ -e "$work/rootfs/usr/sbin/sshd" ] && ! [ -e "$work/rootfs/usr/lib/openssh/sftp-server" ] ||
        die "jupyter-session: the image has sshd or sftp-server"
    # rsync is an ordinary tool of data-science images (and what `rsync -e ssh` runs on
    # the far side); it brings no ssh server.
    [ -x "$work/rootfs/usr/bin/rsync" ] || die "jupyter-session: no /usr/bin/rsync"
    c=$("${BUILDAH[@]}" from --quiet scratch)
    # cp -a into the mounted container, not `buildah copy` (which makes every file
    # root's): /home/jovyan must stay 1000:100, or jupyter cannot write ~/.local.
    mnt=$("${BUILDAH[@]}" mount "$c")
    cp -a "$work/rootfs/." "$mnt/"
    "${BUILDAH[@]}" umount "$c" >/dev/null
    "${BUILDAH[@]}" config \
        --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env SESSION_IMAGE_VAR=from-image --env HOME=/home/jovyan --env SHELL=/bin/bash \
        --env LANG=C.UTF-8 --env NB_USER=jovyan --env NB_UID=1000 --env NB_GID=100 \
        --user 1000:100 --workingdir /home/jovyan --port 8888 \
        --entrypoint '["tini","-g","--"]' --cmd '["jupyterhub-singleuser"]' \
        --label org.opencontainers.image.source=session-ssh/scripts/node-images.sh \
        --label "session-ssh.dev/versions=jupyterhub==$JUPYTERHUB_VERSION jupyterlab==$JUPYTERLAB_VERSION" "$c"
    commit_archive "$c" "$PREFIX/jupyter-session:dev" "$archive"
    rm -rf "$work"
}

# --- minimal: busybox-static only -------------------------------------------------------
hash_minimal() { { echo "$RECIPE_VERSION"; sha256sum </bin/busybox; declare -f build_minimal; } | sha; }
build_minimal() { # ARCHIVE
    local archive=$1 r=$OUT/minimal-rootfs a c
    rm -rf "$r"
    mkdir -p "$r/bin" "$r/tmp"
    chmod 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    c=$("${BUILDAH[@]}" from --quiet scratch)
    "${BUILDAH[@]}" copy --quiet "$c" "$r" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/bin --env SESSION_IMAGE_VAR=from-minimal \
        --user 1000:100 --entrypoint '["/bin/sleep"]' --cmd '["2147483647"]' \
        --label org.opencontainers.image.source=session-ssh/scripts/node-images.sh "$c"
    commit_archive "$c" "$PREFIX/minimal:dev" "$archive"
    rm -rf "$r"
}

# --- named-user: minimal with a passwd entry and USER given by name --------------------
# For the first-law case "runAsNonRoot with an image whose USER is a name": the kubelet
# cannot tell from a name that the user is not root.
hash_named() { { echo "$RECIPE_VERSION"; sha256sum </bin/busybox; declare -f build_named; } | sha; }
build_named() { # ARCHIVE
    local archive=$1 r=$OUT/named-rootfs a c
    rm -rf "$r"
    mkdir -p "$r/bin" "$r/tmp" "$r/etc"
    chmod 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\njovyan:x:1000:100:jovyan:/tmp:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\nusers:x:100:\n' >"$r/etc/group"
    c=$("${BUILDAH[@]}" from --quiet scratch)
    "${BUILDAH[@]}" copy --quiet "$c" "$r" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/bin --env SESSION_IMAGE_VAR=from-named --env HOME=/tmp \
        --user jovyan --entrypoint '["/bin/sleep"]' --cmd '["2147483647"]' \
        --label org.opencontainers.image.source=session-ssh/scripts/node-images.sh "$c"
    commit_archive "$c" "$PREFIX/named-user:dev" "$archive"
    rm -rf "$r"
}

IMAGES=(webhook init-sshd gateway jupyter-session minimal named-user)
hash_of() {
    case $1 in
        webhook) hash_prebuilt webhook session-ssh-webhook webhook/Containerfile ;;
        init-sshd) hash_prebuilt init-sshd init-sshd init-sshd/Containerfile ;;
        gateway) hash_prebuilt gateway session-ssh-gateway webhook/gateway/Containerfile ;;
        jupyter-session) hash_jupyter ;;
        minimal) hash_minimal ;;
        named-user) hash_named ;;
    esac
}
archive_of() { echo "$OUT/$1-$(hash_of "$1").tar"; }

cmd_build() {
    local name archive t0
    for name in "${IMAGES[@]}"; do
        archive=$(archive_of "$name")
        if [ -s "$archive" ]; then
            echo "cached  $PREFIX/$name:dev  $(basename "$archive")"
            continue
        fi
        t0=$SECONDS
        log "building $PREFIX/$name:dev"
        case $name in
            webhook) build_prebuilt webhook session-ssh-webhook webhook/Containerfile "$archive" ;;
            init-sshd) build_prebuilt init-sshd init-sshd init-sshd/Containerfile "$archive" ;;
            gateway) build_prebuilt gateway session-ssh-gateway webhook/gateway/Containerfile "$archive" ;;
            jupyter-session) build_jupyter "$archive" ;;
            minimal) build_minimal "$archive" ;;
            named-user) build_named "$archive" ;;
        esac
        # Older archives of this image are no longer wanted.
        find "$OUT" -maxdepth 1 -name "$name-*.tar" ! -path "$archive" -delete
        echo "built   $PREFIX/$name:dev  $(basename "$archive")  $(du -m "$archive" | cut -f1) MiB  $((SECONDS - t0)) s"
    done
}

# The manifest digest an OCI archive holds (index.json of the archive).
archive_digest() {
    tar -xOf "$1" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'
}

cmd_import() {
    [ -S "$SOCK" ] || die "no cluster containerd at $SOCK: run scripts/cluster.sh up first"
    local ctr=(ctr --address "$SOCK" --namespace k8s.io) name archive want have
    for name in "${IMAGES[@]}"; do
        archive=$(archive_of "$name")
        [ -s "$archive" ] || die "$archive missing: run $0 build"
        want=$(archive_digest "$archive")
        have=$("${ctr[@]}" images ls "name==$PREFIX/$name:dev" | awk 'NR > 1 { print $3 }')
        if [ "$have" = "$want" ]; then
            echo "present $PREFIX/$name:dev  $want"
            continue
        fi
        "${ctr[@]}" images import "$archive" >/dev/null || die "ctr images import $archive failed"
        have=$("${ctr[@]}" images ls "name==$PREFIX/$name:dev" | awk 'NR > 1 { print $3 }')
        [ "$have" = "$want" ] || die "$PREFIX/$name:dev: containerd has '$have', the archive $want"
        echo "import  $PREFIX/$name:dev  $want"
    done
}

prereqs
case ${1:-all} in
    build)
        shift
        [ $# = 0 ] || IMAGES=("$@")
        cmd_build
        ;;
    import) cmd_import ;;
    all)
        cmd_build
        if [ -S "$SOCK" ]; then cmd_import; else log "cluster not up: built only (import later: $0 import)"; fi
        ;;
    *) die "usage: $0 [build|import|all]" ;;
esac
