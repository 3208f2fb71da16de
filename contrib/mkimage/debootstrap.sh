#!/usr/bin/env bash
# Build a minimal Debian root filesystem with debootstrap and write it as a reproducible tar.
#
#   contrib/mkimage/debootstrap.sh [SUITE] [OUT]     SUITE defaults to bookworm; OUT to - (stdout)
#
# Packages come from the Debian mirror this machine's apt is configured with (sources.list and
# sources.list.d, as apt itself reads them), or from $MIRROR when set. Needs root; debootstrap is
# installed with apt-get when missing. The tar keeps the packages' owners (numeric: root is 0:0,
# files of groups like shadow keep theirs), has sorted names and a fixed mtime (SOURCE_DATE_EPOCH,
# default 0); the host's hostname and resolv.conf and apt's downloaded lists are left out.
#
# Example: contrib/mkimage/debootstrap.sh bookworm | dockyard import - debian:bookworm
set -euo pipefail

PROG=${0##*/}

usage() {
  cat <<EOF
Usage: $PROG [SUITE] [OUT]
Write a minimal Debian rootfs tar (debootstrap --variant=minbase SUITE, default bookworm) to OUT,
or to stdout when OUT is - or absent. The mirror is read from apt's sources (override: MIRROR=URL).
Example: $PROG bookworm | dockyard import - debian:bookworm
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 1
}

case ${1:-} in
  -h | --help)
    usage
    exit 0
    ;;
  -?*)
    usage >&2
    exit 2
    ;;
esac
[ $# -le 2 ] || {
  usage >&2
  exit 2
}
SUITE=${1:-bookworm}
OUT=${2:--}
MTIME=${SOURCE_DATE_EPOCH:-0}
[[ $SUITE =~ ^[a-z][a-z0-9.-]*$ ]] || die "not a suite name: '$SUITE'"
[[ $MTIME =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds, not '$MTIME'"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
if [ "$OUT" = - ] && [ -t 1 ]; then
  die "refusing to write a tar to a terminal: give OUT, or redirect stdout"
fi

# The Debian archive apt uses: the source that carries SUITE itself, else the first one with a
# plain codename (not -security or -updates).
find_mirror() {
  # shellcheck disable=SC2016 # $(...) here is apt's field syntax, not the shell's
  apt-get indextargets --no-release-info --format '$(TARGET_OF) $(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk -v suite="$SUITE" '
      $1 != "deb" { next }
      $3 == suite && exact == "" { exact = $2 }
      $3 !~ /-/ && $2 !~ /security/ && plain == "" { plain = $2 }
      END { if (exact != "") print exact; else if (plain != "") print plain }'
}

if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(find_mirror)
  [ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}; set MIRROR=URL"
fi

if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "debootstrap is not installed and there is no apt-get"
  echo "$PROG: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >&2 ||
    die "could not install debootstrap"
fi

umask 022
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/mkimage-debootstrap.XXXXXX")
ROOT=$WORK/rootfs

# debootstrap mounts proc, sys (and in containers binds /dev) inside the target: unmount whatever
# is still there, deepest first, before removing anything, and never cross into another fs.
cleanup() {
  local mnt
  if [ -d "$ROOT" ]; then
    awk -v root="$ROOT" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo |
      sort -r | while IFS= read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" || echo "$PROG: could not unmount $mnt" >&2
    done
  fi
  if awk -v root="$ROOT" 'index($5, root "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    echo "$PROG: mounts remain under $ROOT; leaving $WORK in place" >&2
  else
    rm -rf --one-file-system -- "$WORK"
  fi
}
trap cleanup EXIT

echo "$PROG: debootstrap --variant=minbase $SUITE from $MIRROR" >&2
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >&2 ||
  die "debootstrap failed (log: $ROOT/debootstrap/debootstrap.log, removed on exit)"

# What belongs to the host or to this build, not to the image.
rm -f "$ROOT/etc/hostname" "$ROOT/etc/resolv.conf"
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/var/cache/apt/"*.bin "$ROOT/var/cache/apt/archives/"*.deb
mkdir -p "$ROOT/var/lib/apt/lists/partial"

mapfile -t top < <(find "$ROOT" -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
tar_args=(
  --create --format=gnu --sort=name --numeric-owner
  --mtime="@$MTIME" --no-acls --no-xattrs --no-selinux -C "$ROOT"
)
if [ "$OUT" = - ]; then
  LC_ALL=C tar "${tar_args[@]}" -f - -- "${top[@]}"
else
  LC_ALL=C tar "${tar_args[@]}" -f "$OUT" -- "${top[@]}"
fi
echo "$PROG: Debian $SUITE (minbase) written to ${OUT/#-/stdout}" >&2
