#!/usr/bin/env bash
# Build a minimal busybox root filesystem and write it as a reproducible tar.
#
#   contrib/mkimage/busybox.sh [OUT]        OUT is a file, or - (the default) for stdout
#
# The binary is /bin/busybox from Debian's busybox-static package (installed with apt-get when
# missing and running as root). Every applet becomes a symlink bin/<applet> -> busybox, made here
# rather than with `busybox --install`, so nothing on the host is touched. The tar has numeric
# owners 0:0, names in sorted order and a fixed mtime (SOURCE_DATE_EPOCH, default 0): two runs
# with the same busybox give byte-identical output.
#
# Example: contrib/mkimage/busybox.sh | dockyard import - busybox:latest
set -euo pipefail

PROG=${0##*/}
BUSYBOX=/bin/busybox
PACKAGE=busybox-static

usage() {
  cat <<EOF
Usage: $PROG [OUT]
Write a minimal busybox rootfs tar (from Debian's $PACKAGE) to OUT, or to stdout when OUT is - or absent.
Example: $PROG | dockyard import - busybox:latest
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
[ $# -le 1 ] || {
  usage >&2
  exit 2
}
OUT=${1:--}
MTIME=${SOURCE_DATE_EPOCH:-0}
[[ $MTIME =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds, not '$MTIME'"

if [ "$OUT" = - ] && [ -t 1 ]; then
  die "refusing to write a tar to a terminal: give OUT, or redirect stdout"
fi

# The package, not just any busybox: Debian's dynamically linked one would not run in the image.
if ! dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q 'install ok installed'; then
  if [ "$(id -u)" != 0 ]; then
    die "Debian's $PACKAGE package is not installed; run as root to install it, or: apt-get install $PACKAGE"
  fi
  command -v apt-get >/dev/null || die "$PACKAGE is not installed and there is no apt-get"
  echo "$PROG: installing $PACKAGE" >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$PACKAGE" >&2 ||
    die "could not install $PACKAGE"
fi
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing although $PACKAGE is installed"

umask 022
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mkimage-busybox.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
ROOT=$WORK/rootfs
mkdir "$ROOT"

for d in bin dev etc home proc root sys tmp var; do
  mkdir "$ROOT/$d"
done
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"

install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
count=0
while IFS= read -r applet; do
  case $applet in
    "" | busybox | */* | .*) continue ;;
  esac
  ln -s busybox "$ROOT/bin/$applet"
  count=$((count + 1))
done < <("$BUSYBOX" --list)
[ -L "$ROOT/bin/sh" ] || die "$BUSYBOX has no sh applet"

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF

# Top-level names in C order too, so the archive does not depend on the caller's locale.
mapfile -t top < <(find "$ROOT" -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
tar_args=(
  --create --format=gnu --sort=name --numeric-owner --owner=0 --group=0
  --mtime="@$MTIME" --no-acls --no-xattrs --no-selinux -C "$ROOT"
)
if [ "$OUT" = - ]; then
  LC_ALL=C tar "${tar_args[@]}" -f - -- "${top[@]}"
else
  LC_ALL=C tar "${tar_args[@]}" -f "$OUT" -- "${top[@]}"
fi
version=$("$BUSYBOX" 2>/dev/null | head -n 1 || true)
version=${version%.}
echo "$PROG: ${version:-busybox}, $count applets, written to ${OUT/#-/stdout}" >&2
