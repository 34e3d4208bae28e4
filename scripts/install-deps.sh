#!/usr/bin/env bash
# Installs everything mipsec's demo and test suite need on a fresh Debian 12 machine.
# Idempotent: already-installed pieces are skipped. Needs root (apt-get, pip).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (apt-get and network namespaces need it)" >&2
  exit 1
fi

APT_PKGS=(
  iproute2 nftables conntrack tcpdump tshark iperf3 procps iputils-ping
  strongswan-swanctl charon-systemd strongswan-charon strongswan-pki
  libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins
  python3-scapy python3-cryptography
  dnsmasq-base busybox ethtool
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer it ahead of time.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's charon-systemd unit would start a gateway in the root namespace; the lab runs
# its own instances inside namespaces, so keep the packaged service off.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now strongswan.service >/dev/null 2>&1 || true
fi

# The python3 first on PATH may not be Debian's (pyenv): give it scapy too.
if ! python3 -c 'import scapy, cryptography' >/dev/null 2>&1; then
  echo "install-deps: pip install scapy cryptography for $(command -v python3)"
  python3 -m pip install -q --disable-pip-version-check 'scapy==2.6.1' cryptography
fi

# cargo-fuzz (libFuzzer) for the bounded fuzz runs.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-deps: cargo install cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
echo "install-deps: done"
