#!/bin/sh
# apt-get install what is missing of PKG..., for `make demo` / `make test` on a fresh
# Debian or Raspberry Pi OS machine, and leave no service of them enabled or running.
#   packaging/apt-install.sh PKG...
# The demo and the tests start their own brokers and servers on loopback ports; Debian's
# packages would otherwise enable mosquitto, nats-server, rabbitmq-server, epmd, PostgreSQL
# and avahi as boot services (epmd, RabbitMQ and avahi listen on every interface). Only services of packages this run installed
# (dependencies included) are disabled and stopped: one you had before is yours.
set -eu
installed() { dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '/^ii/ {print $2}' | sort; }
missing=""
for pkg in "$@"; do
	dpkg-query -W -f '${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing="$missing $pkg"
done
[ -n "$missing" ] || exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
before=$(mktemp)
trap 'rm -f "$before"' EXIT
installed >"$before"
echo "installing:$missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 install -y -qq $missing
for pkg in $(installed | comm -13 "$before" -); do
	for unit in $(dpkg -L "$pkg" | sed -n 's#^/\(usr/\)\{0,1\}lib/systemd/system/\([^/@]*\.\(service\|socket\)\)$#\2#p'); do
		# The system's own plumbing (the D-Bus system bus a test package pulled in) stays.
		case "$unit" in dbus* | systemd-* | udev*) continue ;; esac
		if [ -d /run/systemd/system ]; then
			$sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
		else
			$sudo systemctl disable "$unit" >/dev/null 2>&1 || true
		fi
		echo "  $unit (from $pkg): disabled and stopped, nothing here needs it at boot"
	done
	# Without systemd as PID 1 the packages started their init scripts instead.
	if [ ! -d /run/systemd/system ]; then
		for script in $(dpkg -L "$pkg" | sed -n 's#^/etc/init\.d/\([^/]*\)$#\1#p'); do
			case "$script" in dbus | udev) continue ;; esac
			$sudo service "$script" stop >/dev/null 2>&1 || true
			$sudo update-rc.d "$script" disable >/dev/null 2>&1 || true
		done
		# RabbitMQ's init script starts Erlang's port mapper, which stays up after it.
		if [ "$pkg" = erlang-base ] && command -v epmd >/dev/null; then
			epmd -kill >/dev/null 2>&1 || true
		fi
	fi
done
