#!/usr/bin/env bash
# Regenerate the TypeScript and Go SDKs' generated code from proto/ (clients/<lang>/generate.sh).
#   bash scripts/gen_clients.sh           regenerate
#   bash scripts/gen_clients.sh --check   regenerate and fail if anything changed (a generated file was stale)
# A language whose toolchain is missing is skipped with a message, unless INFER_REQUIRE_SDKS=1 (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--check" ] && check=1
declare -A tool=([typescript]=npm [go]=protoc-gen-go-grpc)
snapshot() {  # content hashes of an SDK's files, build outputs and dependencies left out
  find "clients/$1" -type f -not -path '*/node_modules/*' -not -path '*/dist/*' -print0 | sort -z \
    | xargs -0 sha256sum
}
stale=0
for lang in typescript go; do
  if ! command -v "${tool[$lang]}" > /dev/null; then
    if [ "${INFER_REQUIRE_SDKS:-0}" = 1 ]; then
      echo "gen_clients: ${tool[$lang]} is not installed: cannot regenerate the $lang SDK" >&2
      exit 1
    fi
    echo "gen_clients: skipping the $lang SDK (${tool[$lang]} is not installed)" >&2
    continue
  fi
  before=$(snapshot "$lang")
  bash "clients/$lang/generate.sh" > /dev/null
  if [ "$check" = 1 ] && [ "$before" != "$(snapshot "$lang")" ]; then
    echo "gen_clients: the $lang SDK's generated code was stale (now regenerated; commit it):" >&2
    diff <(echo "$before") <(snapshot "$lang") >&2 || true
    stale=1
  fi
done
exit $stale
