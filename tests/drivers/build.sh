#!/bin/bash
# Build the Go test drivers into tests/drivers/bin/ from Debian's Go packages
# (GOPATH mode, no network). Does nothing for a driver whose binary is newer
# than its sources.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off
export GOCACHE=${GOCACHE:-$here/bin/.gocache}

mkdir -p "$here/bin"
for driver in cnitool-libcni gocni-tool; do
    out=$here/bin/$driver
    if [[ -x $out && -z $(find "$here/$driver" -newer "$out" -print -quit) ]]; then
        continue
    fi
    (cd "$here/$driver" && go build -o "$out.tmp" . && mv "$out.tmp" "$out")
    echo "built $out"
done
