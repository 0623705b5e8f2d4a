#!/usr/bin/env bash
# Regenerates the Go stubs from ../../proto with protoc-gen-go and protoc-gen-go-grpc:
#   inferpb/    grpc_service.proto + model_config.proto (package inference)
#   controlpb/  control.proto (package infer.control.v1)
# The protos carry no go_package option, so the Go import paths are passed as M flags. Files are named relative
# to the proto directory, so the generated headers name only the .proto file (no machine path), and two runs
# write byte-identical files (for the same protoc and plugin versions: Debian bookworm's in CI).
#
# ./generate.sh          rewrite inferpb/ and controlpb/
# ./generate.sh --check  generate into a temporary directory and fail if that differs from what is committed
set -euo pipefail
cd "$(dirname "$0")"
for tool in protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "generate.sh: $tool not found (apt-get install protobuf-compiler protoc-gen-go protoc-gen-go-grpc)" >&2; exit 1; }
done
module=$(sed -n 's/^module //p' go.mod)
maps="Mgrpc_service.proto=$module/inferpb;inferpb"
maps+=",Mmodel_config.proto=$module/inferpb;inferpb"
maps+=",Mcontrol.proto=$module/controlpb;controlpb"

generate() {  # $1: output root (the module's directory or a stand-in for it)
  mkdir -p "$1/inferpb" "$1/controlpb"
  rm -f "$1"/inferpb/*.pb.go "$1"/controlpb/*.pb.go
  protoc --proto_path=../../proto \
    --go_out="$1" --go_opt="module=$module,$maps" \
    --go-grpc_out="$1" --go-grpc_opt="module=$module,$maps" \
    grpc_service.proto model_config.proto control.proto
}

if [[ "${1:-}" == "--check" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  status=0
  for pkg in inferpb controlpb; do
    diff -r <(cd "$tmp/$pkg" && ls *.pb.go) <(cd "$pkg" && ls *.pb.go) >/dev/null || status=1
    for f in "$tmp/$pkg"/*.pb.go; do
      cmp -s "$f" "$pkg/$(basename "$f")" || { echo "generate.sh: $pkg/$(basename "$f") is stale" >&2; status=1; }
    done
  done
  [[ $status == 0 ]] || echo "generate.sh: the committed stubs differ from ../../proto: run clients/go/generate.sh" >&2
  exit $status
fi
generate .
