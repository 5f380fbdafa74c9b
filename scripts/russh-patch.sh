#!/usr/bin/env bash
# Prepare the patched russh that the root Cargo.toml's [patch.crates-io] entry
# points at (target/patched/russh-0.65.1). Run once before any cargo build; it
# is a fast no-op when the tree is already there for the same crate and patch.
#
# Takes russh-0.65.1.crate exactly as crates.io delivers it (cargo's cache, or
# a download from static.crates.io), checks its sha256 against the value below
# (the same checksum Cargo.lock records), extracts it and applies
# patches/russh-0.65.1-flow-control.patch with `patch -p1` (Debian: patch).
# See patches/README.md for what the patch does and why.
set -euo pipefail

VERSION=0.65.1
CRATE_SHA256=94be3d86c71b9ed220a675c405e35c7a02565a009bf8da2e9cc13a700320a5c5
URL="https://static.crates.io/crates/russh/russh-${VERSION}.crate"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
patch_file="$root/patches/russh-${VERSION}-flow-control.patch"
out_parent="$root/target/patched"
dest="$out_parent/russh-${VERSION}"
marker="$dest/.session-ssh-patch"

die() { echo "russh-patch: $*" >&2; exit 1; }

[[ -f $patch_file ]] || die "missing $patch_file"
patch_sha=$(sha256sum "$patch_file" | cut -d' ' -f1)
want="crate=$CRATE_SHA256 patch=$patch_sha"

# Fast path: already prepared from this crate and this patch.
if [[ -f $marker && "$(cat "$marker")" == "$want" ]]; then
    exit 0
fi

command -v patch >/dev/null || die "GNU patch is required (Debian: apt-get install patch)"
mkdir -p "$out_parent"

# One preparer at a time (several cargo invocations may start together).
exec 9>"$out_parent/.lock"
flock 9
if [[ -f $marker && "$(cat "$marker")" == "$want" ]]; then
    exit 0
fi

work=$(mktemp -d "$out_parent/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

crate=""
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/russh-"${VERSION}".crate; do
    if [[ -f $cached ]] && [[ "$(sha256sum "$cached" | cut -d' ' -f1)" == "$CRATE_SHA256" ]]; then
        crate=$cached
        break
    fi
done
if [[ -z $crate ]]; then
    crate="$work/russh-${VERSION}.crate"
    curl -fsSL --retry 3 -o "$crate" "$URL" || die "download failed: $URL"
fi
got=$(sha256sum "$crate" | cut -d' ' -f1)
[[ $got == "$CRATE_SHA256" ]] || die "sha256 mismatch for $crate: got $got, want $CRATE_SHA256"

tar -xzf "$crate" -C "$work"
(cd "$work/russh-${VERSION}" && patch -p1 --batch --forward --quiet <"$patch_file") \
    || die "patch does not apply to russh ${VERSION}"
echo "$want" >"$work/russh-${VERSION}/.session-ssh-patch"

rm -rf "$dest"
mv "$work/russh-${VERSION}" "$dest"
echo "russh-patch: prepared $dest ($want)"
