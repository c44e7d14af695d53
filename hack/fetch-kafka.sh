#!/usr/bin/env bash
# Apache Kafka's broker jars (KRaft, single node) from Maven Central into a per-version cache,
# resolved by Maven from hack/kafka/pom.xml. tests/kafka.py starts a broker from them.
#   hack/fetch-kafka.sh   -> prints the directory holding the jars
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(grep -Eo '<kafka.version>[^<]+' "$here/kafka/pom.xml" | sed 's/.*>//')"
out="${XDG_CACHE_HOME:-$HOME/.cache}/entitle/kafka-$version"
if [ ! -f "$out/.complete" ]; then
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  mvn -B -q -f "$here/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$out.tmp/libs" >&2
  touch "$out.tmp/.complete"
  rm -rf "$out"
  mv "$out.tmp" "$out"
fi
echo "$out/libs"
