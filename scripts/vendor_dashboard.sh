#!/usr/bin/env bash
# Vendor the dashboard's chart library (Apache ECharts, Apache-2.0) into src/infer/observability/static/vendor/.
#
#   scripts/vendor_dashboard.sh           fetch echarts@VERSION with `npm pack`, copy dist/echarts.min.js and its
#                                         LICENSE, NOTICE and licenses/LICENSE-d3, verify the pinned sha256
#   scripts/vendor_dashboard.sh --check   verify the vendored file against the pin (no network)
#
# The dashboard is served by the engine itself: no build step at run time, no CDN. To move to a new version, change
# VERSION, run with --update-pin to print the new digest, review the diff, then set SHA256.
set -euo pipefail

VERSION="6.1.0"
SHA256="b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0"  # dist/echarts.min.js of echarts@6.1.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/src/infer/observability/static/vendor"
FILE="$DEST/echarts.min.js"

digest() { sha256sum "$1" | cut -d' ' -f1; }

check() {
  if [[ ! -f "$FILE" ]]; then
    echo "vendor_dashboard: $FILE is missing (run scripts/vendor_dashboard.sh)" >&2
    return 1
  fi
  local got
  got="$(digest "$FILE")"
  if [[ "$got" != "$SHA256" ]]; then
    echo "vendor_dashboard: $FILE has sha256 $got, pinned $SHA256 (echarts $VERSION)" >&2
    return 1
  fi
  for f in LICENSE NOTICE LICENSE-d3; do
    [[ -f "$DEST/echarts.$f" ]] || { echo "vendor_dashboard: $DEST/echarts.$f is missing" >&2; return 1; }
  done
  echo "vendor_dashboard: echarts $VERSION ok ($SHA256)"
}

mode="${1:-}"
if [[ "$mode" == "--check" ]]; then
  check
  exit $?
fi
if [[ -n "$mode" && "$mode" != "--update-pin" ]]; then
  echo "usage: $0 [--check | --update-pin]" >&2
  exit 2
fi

command -v npm >/dev/null || { echo "vendor_dashboard: npm is needed to fetch echarts" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "echarts@$VERSION" >/dev/null)
tar -xzf "$work/echarts-$VERSION.tgz" -C "$work"
got="$(digest "$work/package/dist/echarts.min.js")"
if [[ "$mode" == "--update-pin" ]]; then
  echo "echarts $VERSION dist/echarts.min.js sha256: $got"
  exit 0
fi
if [[ "$got" != "$SHA256" ]]; then
  echo "vendor_dashboard: fetched echarts $VERSION has sha256 $got, pinned $SHA256: not copied" >&2
  exit 1
fi
mkdir -p "$DEST"
cp "$work/package/dist/echarts.min.js" "$FILE"
cp "$work/package/LICENSE" "$DEST/echarts.LICENSE"
cp "$work/package/NOTICE" "$DEST/echarts.NOTICE"
cp "$work/package/licenses/LICENSE-d3" "$DEST/echarts.LICENSE-d3"
check
