#!/bin/sh
# A clean Debian root to build (make deb-arm64) or test (tests/test_deb.py) the package in,
# made once with debootstrap and kept outside the repository, so later runs only copy it.
#   packaging/debian-root.sh ARCH [SUITE]   prints the root's path
# ZONE_AGENT_ROOTS sets where roots are kept (default ~/.cache/zone-agent/roots).
# A foreign ARCH (arm64 on an x86-64 machine) runs under qemu-user through binfmt_misc.
set -eu
arch=${1:?usage: debian-root.sh ARCH [SUITE]}
suite=${2:-bookworm}
roots=${ZONE_AGENT_ROOTS:-${XDG_CACHE_HOME:-$HOME/.cache}/zone-agent/roots}
# What the package depends on, so dpkg -i works offline in the root, plus what building a
# venv there needs (python3-venv; gcc and python3-dev for spidev and evdev, which have no
# aarch64 wheels). A change of this list makes a new root (its name has the list's hash).
include=python3,python3-venv,adduser,libusb-1.0-0,systemd,udev,ca-certificates,gcc
include=$include,python3-dev,sqlite3
root="$roots/$suite-$arch-$(echo "$include" | md5sum | cut -c1-8)"
mkdir -p "$roots"
# One debootstrap at a time (two test runs may ask at once); the second finds it made.
exec 9>"$roots/.lock"
flock 9
if [ -f "$root/.complete" ]; then
	echo "$root"
	exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
	# binfmt_misc must know qemu-aarch64 with the F (fix-binary) flag: the chroot has no qemu.
	[ -f /proc/sys/fs/binfmt_misc/status ] ||
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	[ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
		command -v update-binfmts >/dev/null && update-binfmts --enable qemu-aarch64 2>/dev/null
	} || /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
fi
rm -rf "$root.tmp"
echo "debootstrap $suite $arch into $root (once; minutes, more under qemu)" >&2
debootstrap --arch="$arch" --variant=minbase --include="$include" "$suite" "$root.tmp" "$mirror" >&2
rm -rf "$root.tmp/var/cache/apt/archives"/*.deb
touch "$root.tmp/.complete"
rm -rf "$root"
mv "$root.tmp" "$root"
echo "$root"
