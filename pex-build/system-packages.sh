#!/usr/bin/env bash
# Install the Debian packages listed in $1 (one a line, '#' comments) that are not installed.
# Only as root on a system with apt-get; otherwise say what is missing and go on: the tests
# that need a missing program skip with a reason.
set -u
list=${1:-debian-packages.txt}
[ -f "$list" ] || exit 0
missing=()
while read -r pkg _; do
  case "$pkg" in ''|'#'*) continue ;; esac
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done < "$list"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: not installing ${missing[*]} (needs root and apt-get); tests that use them will skip"
  exit 0
fi
echo "installing Debian packages for the tests: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || echo "note: apt-get update failed"
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
  || echo "note: apt-get install ${missing[*]} failed; tests that use them will skip"
exit 0
