#!/usr/bin/env bash
# Installs Mesa's lavapipe (Vulkan on the CPU) on Debian/Ubuntu, as root.
# Prefers Mesa 25 from bookworm-backports (6-9x faster than bookworm's Mesa 22),
# falls back to the distribution's mesa-vulkan-drivers and says so.
# See ARCHITECTURE.md ("No GPU?") and ../shared/docs/LAVAPIPE.md.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "install-lavapipe: run as root (or with sudo)" >&2
  exit 1
fi

# The backports suite lives on the machine's own Debian mirror: take its URI from
# the apt sources rather than naming a host here.
uri=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
elif [ -f /etc/apt/sources.list ]; then
  uri=$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

backports=0
if [ -n "$uri" ] && [ "$codename" = bookworm ]; then
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" > /etc/apt/sources.list.d/backports.sources
  backports=1
fi

apt-get update -qq || echo "install-lavapipe: apt-get update reported errors (continuing)" >&2
if [ "$backports" = 1 ] && apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      mesa-vulkan-drivers libvulkan1 >/dev/null; then
  echo "install-lavapipe: installed Mesa from bookworm-backports"
else
  echo "install-lavapipe: backports unavailable; installing the distribution's Mesa (slower lavapipe)" >&2
  apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null
fi
dpkg-query -W -f='install-lavapipe: ${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
