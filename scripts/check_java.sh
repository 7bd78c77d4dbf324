#!/usr/bin/env bash
# Spark 4 needs Java 17 (or 21). Say so in one line when it is missing.
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
  echo "flowops needs Java 17 for Spark 4, and no 'java' was found (JAVA_HOME='${JAVA_HOME:-}')." >&2
  echo "Install it, e.g. 'apt-get install openjdk-17-jre-headless', or point JAVA_HOME at a JDK 17." >&2
  exit 1
fi
version=$("$java_bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
if [ -z "$version" ] || [ "$version" -lt 17 ]; then
  echo "flowops needs Java 17 or newer for Spark 4; found: $("$java_bin" -version 2>&1 | head -n 1)." >&2
  echo "Install openjdk-17-jre-headless or point JAVA_HOME at a JDK 17." >&2
  exit 1
fi
