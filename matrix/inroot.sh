#!/usr/bin/env bash
# Run a command inside a Debian root made by matrix/run.py, in the repository:
#
#   matrix/inroot.sh build/roots/sid make test PYTHON=python3.14 ...
#
# The repository is bind-mounted at /repo (the root keeps no copy of it),
# /proc and a tmpfs on /tmp are mounted, all for the command only: they are
# unmounted when it ends, also when it fails or is interrupted. resolv.conf and the CA bundle of
# this machine are copied in first, so pip inside reaches PyPI as it does here.
# Must run as root (chroot, mount). The mounts live in a private mount
# namespace (unshare): even a killed run leaves none behind on the host.
set -euo pipefail

if [ -z "${INROOT_NAMESPACE:-}" ]; then
	INROOT_NAMESPACE=1 exec unshare --mount --propagation private "$0" "$@"
fi

root=$(realpath "$1")
shift
repo=$(realpath "$(dirname "$0")/..")
ca=/etc/ssl/certs/ca-certificates.crt

mounted=()
cleanup() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" 2>/dev/null || umount --lazy "${mounted[i]}"
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$root/repo" "$root/etc/ssl/certs"
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f "$ca" ]; then cp "$ca" "$root$ca"; fi

mount -t proc proc "$root/proc"
mounted+=("$root/proc")
mount --bind "$repo" "$root/repo"
mounted+=("$root/repo")
# /tmp in memory, bounded: nothing the tests or pip put there lands in the
# root (which lives inside the repository) or can fill the disk
mount -t tmpfs -o size=2g tmpfs "$root/tmp"
mounted+=("$root/tmp")

# a clean environment: nothing of the host's Python or pip set-up leaks in
chroot "$root" /usr/bin/env -i \
	HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	PIP_CERT="$ca" SSL_CERT_FILE="$ca" PIP_DISABLE_PIP_VERSION_CHECK=1 \
	/bin/sh -c 'cd /repo && exec "$@"' sh "$@"
