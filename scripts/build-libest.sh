#!/usr/bin/env bash
# Builds Cisco's libest EST server (`estserver`) from Debian's source package, for the EST
# interoperability tests (tests/integration/test_est_libest.py).
#
# libest is packaged by Debian only from trixie on (source package `libest`); bookworm has no
# binary. This downloads the two files of Debian's source package 3.2.0+ds-1.1 from Debian's
# archive, refuses them unless their SHA-256 sums are the pinned ones, applies Debian's own
# patches (debian/patches/series, in order) and builds unmodified against the system's
# libssl-dev. Nothing downloaded or built is committed: everything lives in
#   ${LIBEST_CACHE:-.cache}/libest-3.2.0+ds-1.1/   (ignored by git)
# with src/ (the patched source, whose example/server/ the test fixture reads) and inst/
# (bin/estserver). A second run finds the stamp and does nothing.
#
# Needs: curl, xz-utils, gcc, make, libssl-dev (`make debs` installs them).
set -euo pipefail

VERSION="3.2.0+ds-1.1"
BASE_URL="${LIBEST_MIRROR:-http://deb.debian.org/debian}/pool/main/libe/libest"
ORIG="libest_3.2.0+ds.orig.tar.xz"
ORIG_SHA256="46d1150ff6f1ace3ccd9a9ab962cfafd275b7c52edb0fd4e868280672aa7cf0d"
DEB="libest_3.2.0+ds-1.1.debian.tar.xz"
DEB_SHA256="42cc6a7a7fa5d426b5ffbc4925c344328ef9a6b113858f59eb30db578bf0cd1f"

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LIBEST_CACHE:-$root/.cache}"
dir="$cache/libest-$VERSION"
stamp="$dir/.built"
# Configured as Debian's debian/rules does (dh_auto_configure -- --enable-brski); like
# Debian's, without liburiparser, so EST labels (path segments) answer 404.
CONFIGURE_FLAGS="--enable-brski"
want_stamp="$ORIG_SHA256 $DEB_SHA256 $CONFIGURE_FLAGS"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$dir/inst/bin/estserver" ]; then
  exit 0
fi

mkdir -p "$cache"
# One build at a time (two `make test` in the same clone, or parallel CI steps).
exec 9>"$cache/.libest.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$dir/inst/bin/estserver" ]; then
  exit 0
fi

echo "libest $VERSION: building Cisco's EST server from Debian's source package (about a minute)"
rm -rf "$dir"
mkdir -p "$dir/downloads"

fetch() {  # fetch FILE SHA256: download into downloads/ and refuse unless the sum matches
  local file="$1" sum="$2" path="$dir/downloads/$1"
  echo "libest: downloading $BASE_URL/$file"
  curl -fsSL --retry 3 -o "$path.part" "$BASE_URL/$file"
  local got
  got="$(sha256sum "$path.part" | cut -d' ' -f1)"
  if [ "$got" != "$sum" ]; then
    rm -f "$path.part"
    echo "libest: REFUSED $file: sha256 $got, expected $sum (not Debian's file)" >&2
    exit 1
  fi
  mv "$path.part" "$path"
  echo "libest: $file sha256 ok"
}
fetch "$ORIG" "$ORIG_SHA256"
fetch "$DEB" "$DEB_SHA256"

work="$dir/work"
mkdir -p "$work"
tar -xJf "$dir/downloads/$ORIG" -C "$work"
top="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)"
tar -xJf "$dir/downloads/$DEB" -C "$top"
echo "libest: applying Debian's patches"
while IFS= read -r line || [ -n "$line" ]; do
  line="${line%%#*}"
  line="$(echo "$line" | xargs)"
  [ -z "$line" ] && continue
  echo "libest:   $line"
  patch -s -p1 -d "$top" <"$top/debian/patches/$line"
done <"$top/debian/patches/series"
mv "$top" "$dir/src"
rmdir "$work"

log="$dir/build.log"
echo "libest: configure + make (log: $log)"
(
  cd "$dir/src"
  # shellcheck disable=SC2086
  ./configure --prefix="$dir/inst" $CONFIGURE_FLAGS
  make -j"$(nproc)"
  make install
) >"$log" 2>&1 || {
  echo "libest: build FAILED; last lines of $log:" >&2
  tail -n 40 "$log" >&2
  exit 1
}
"$dir/inst/bin/estserver" -? >/dev/null 2>&1 || true
[ -x "$dir/inst/bin/estserver" ] || { echo "libest: no estserver after the build" >&2; exit 1; }
echo "$want_stamp" >"$stamp"
echo "libest: built $dir/inst/bin/estserver"
