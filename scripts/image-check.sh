#!/usr/bin/env bash
# Checks an image `scripts/image.sh` built: its config (non-root user, labels, environment),
# and its filesystem, by running every binary from the image's own root with the image's own
# loader and libraries (`--version`, and `oprelay config check` of the dev overlay's config).
# Runs it with podman too when this machine's sandbox allows containers.
#
#   scripts/image-check.sh TAG VERSION REVISION
set -euo pipefail
cd "$(dirname "$0")/.."
tag=$1 version=$2 revision=$3
if [ "$(id -u)" != 0 ] && [ -z "${BUILDAH_ISOLATION_DONE:-}" ]; then
  exec env BUILDAH_ISOLATION_DONE=1 buildah unshare "$0" "$@"
fi
fail() { echo "image-check: $*" >&2; exit 1; }

config=$(buildah inspect --type image "$tag")
python3 - "$config" "$version" "$revision" <<'PY' || fail "config"
import json, sys
c, version, revision = json.loads(sys.argv[1])["OCIv1"]["config"], sys.argv[2], sys.argv[3]
labels = c.get("Labels") or {}
assert c.get("User") == "65532:65532", c.get("User")
assert labels.get("org.opencontainers.image.version") == version, labels
assert labels.get("org.opencontainers.image.revision") == revision, labels
assert "OPRELAY_CONFIG=/etc/oprelay/oprelay.toml" in c.get("Env", []), c.get("Env")
print("image-check: config OK (user 65532, version and revision labels)")
PY

ctr=$(buildah from "$tag")
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")
loader=$(ls "$root"/lib64/ld-linux-*.so.* 2>/dev/null | head -1)
[ -n "$loader" ] || fail "no dynamic loader in the image"
libpath=$(find "$root" -name 'libc.so.6' -printf '%h\n' | head -1)
run() { "$loader" --library-path "$libpath" "$@"; }
for b in oprelay-fetcher oprelay-normalizer oprelay-forwarder oprelay-healthwatch oprelay; do
  out=$(run "$root/usr/local/bin/$b" --version) || fail "$b --version failed"
  [ "$out" = "$b $version ($revision)" ] || fail "$b --version says '$out'"
done
# Nothing from the host: every library a binary needs resolves inside the image.
for b in "$root"/usr/local/bin/*; do
  missing=$(run --list "$b" | grep -c 'not found' || true)
  [ "$missing" = 0 ] || fail "$(basename "$b") needs a library the image lacks"
done
cfg=$(mktemp -d)
sed 's/^url = .*/url = "nats:\/\/127.0.0.1:4222"/' deploy/k8s/base/oprelay.toml >"$cfg/oprelay.toml"
run "$root/usr/local/bin/oprelay" --config "$cfg/oprelay.toml" nats authorization >/dev/null ||
  fail "oprelay cannot load the deployed config"
rm -rf "$cfg"
echo "image-check: every binary runs from the image's root with its own libraries"

if command -v podman >/dev/null && podman run --rm "$tag" /usr/local/bin/oprelay --version >/dev/null 2>&1; then
  echo "image-check: podman run OK: $(podman run --rm "$tag" /usr/local/bin/oprelay --version)"
else
  echo "image-check: podman is missing or cannot run containers here; checked from the image's root instead"
fi
