#!/usr/bin/env bash
# Checks the Go SDK against a running infer server at $INFER_TARGET (host:port) serving the default model
# repository: generated stubs up to date, gofmt, go vet, go test (unit tests plus the tests against the server),
# and the README's quickstart built and run. Offline: GOPATH mode on Debian's Go packages
# (golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -z "${INFER_TARGET:-}" ]]; then
  echo "test.sh: set INFER_TARGET=host:port of a running infer server (default model repository)" >&2
  exit 2
fi
command -v go >/dev/null || { echo "test.sh: go not found (apt-get install golang-go)" >&2; exit 1; }
gocode=/usr/share/gocode
[[ -d $gocode/src/google.golang.org/grpc && -d $gocode/src/google.golang.org/protobuf ]] || {
  echo "test.sh: $gocode lacks grpc-go or protobuf (apt-get install golang-google-grpc-dev golang-google-protobuf-dev)" >&2
  exit 1
}

# GOPATH mode: a throwaway GOPATH whose src/<module path> is this directory, then Debian's packages.
module=$(sed -n 's/^module //p' "$here/go.mod")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gopath/src/$(dirname "$module")"
ln -s "$here" "$work/gopath/src/$module"
export GO111MODULE=off GOPATH="$work/gopath:$gocode" GOFLAGS= GOPROXY=off CGO_ENABLED=0
[[ -n "$(go env GOCACHE 2>/dev/null)" ]] || export GOCACHE="$work/gocache"
cd "$work/gopath/src/$module"

bash ./generate.sh --check
unformatted=$(gofmt -l .)
[[ -z $unformatted ]] || { echo "test.sh: not gofmt-ed: $unformatted" >&2; exit 1; }
# The README shows examples/quickstart/main.go verbatim (the first ```go block).
diff <(awk '/^```go$/ {inside = 1; next} /^```$/ && inside {exit} inside' README.md) examples/quickstart/main.go || {
  echo "test.sh: README.md's example differs from examples/quickstart/main.go" >&2
  exit 1
}
go vet ./...
go test -count=1 ./...
go build -o "$work/quickstart" ./examples/quickstart
out=$("$work/quickstart" "$INFER_TARGET")
echo "quickstart: $out"
[[ $out == "the next 24 hours: ["* ]] || { echo "test.sh: unexpected quickstart output" >&2; exit 1; }
