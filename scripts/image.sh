#!/usr/bin/env bash
# Builds the oprelay OCI image without pulling anything: `buildah from scratch`, the release
# binaries, exactly the shared libraries they load (from `ldd`), the CA certificates, and a
# non-root user, with OCI labels naming the version and the source revision. The same layout
# as the Dockerfile's distroless image (binaries in /usr/local/bin, uid 65532).
#
#   scripts/image.sh [TAG]     default tag: oprelay:<version>
#
# Writes the image to buildah's local store and to target/oprelay-image.oci.tar (an OCI
# archive `podman load` or `skopeo copy` can push), then checks it (scripts/image-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] && [ -z "${BUILDAH_ISOLATION_DONE:-}" ]; then
  # Mounting a container's filesystem needs a user namespace when not root.
  exec env BUILDAH_ISOLATION_DONE=1 buildah unshare "$0" "$@"
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=${OPRELAY_REVISION:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
tag=${1:-oprelay:$version}
bins=(oprelay-fetcher oprelay-normalizer oprelay-forwarder oprelay-healthwatch oprelay opsim)

echo "image: building the release binaries (revision $revision)"
OPRELAY_REVISION=$revision cargo build --release --locked --quiet \
  -p oprelay-fetcher -p oprelay-normalizer -p oprelay-forwarder -p oprelay-healthwatch \
  -p oprelay-ctl -p opsim

ctr=$(buildah from scratch)
cleanup() { buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
root=$(buildah mount "$ctr")

install -d "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/etc/oprelay"
chmod 1777 "$root/tmp"
for b in "${bins[@]}"; do install -m 0755 "target/release/$b" "$root/usr/local/bin/$b"; done

# Every shared library any binary loads, at the path the loader looks for it.
libs=$(for b in "${bins[@]}"; do ldd "target/release/$b"; done |
  awk '/=>/ { print $3 } /^[[:space:]]*\/.*ld-linux/ { print $1 }' | sort -u)
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done

# CA certificates for the fetcher's and the sinks' TLS (the system roots are the default).
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
install -d -o 65532 -g 65532 "$root/home/nonroot"

buildah config \
  --user 65532:65532 \
  --workingdir /home/nonroot \
  --env OPRELAY_CONFIG=/etc/oprelay/oprelay.toml \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --entrypoint '[]' \
  --cmd '["/usr/local/bin/oprelay", "--help"]' \
  --label org.opencontainers.image.title=oprelay \
  --label org.opencontainers.image.description="1Password Events API to SIEM pipeline" \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.revision="$revision" \
  --label org.opencontainers.image.source=https://github.com/oprelay/oprelay \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah umount "$ctr" >/dev/null
buildah commit --quiet --format oci "$ctr" "$tag" >/dev/null
rm -f target/oprelay-image.oci.tar
buildah push --quiet "$tag" "oci-archive:target/oprelay-image.oci.tar:$tag"
echo "image: $tag ($(du -h target/oprelay-image.oci.tar | cut -f1) as target/oprelay-image.oci.tar)"
trap - EXIT
buildah rm "$ctr" >/dev/null
scripts/image-check.sh "$tag" "$version" "$revision"
