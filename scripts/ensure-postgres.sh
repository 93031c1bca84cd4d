#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb and pg_ctl) is installed, for the tests of the SQL sink.
#
# The tests never use a system cluster: they start a private server of their own in a temp dir
# (tests/postgres.py). This script only installs the programs, with Debian's `postgresql` package
# when they are missing. It is idempotent and returns at once when they are already there.
set -euo pipefail

have_server() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

if have_server; then
    exit 0
fi

install_hint="Install a PostgreSQL server, e.g. on Debian or Ubuntu: sudo apt-get install postgresql
(the tests need its initdb and pg_ctl, in /usr/lib/postgresql/*/bin or on PATH)."

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL is not installed and this is not a Debian-like system." >&2
    echo "$install_hint" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    echo "ensure-postgres: PostgreSQL is not installed, and installing it needs root (no sudo here)." >&2
    echo "$install_hint" >&2
    exit 1
fi

echo "ensure-postgres: installing Debian's postgresql package for the tests" >&2

# The package's post-install script creates a cluster and starts it as a service. The tests do not
# use it, so tell invoke-rc.d not to start services for the length of the install, the standard
# Debian way; an existing policy (as in most container images) is left as it is.
policy=/usr/sbin/policy-rc.d
added_policy=false
if [ ! -e "$policy" ]; then
    if printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null \
        && as_root chmod 755 "$policy"; then
        added_policy=true
    fi
fi
remove_policy() {
    if [ "$added_policy" = true ]; then
        as_root rm -f "$policy"
    fi
}
trap remove_policy EXIT

as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null

if ! have_server; then
    echo "ensure-postgres: the postgresql package was installed, but initdb and pg_ctl are not found." >&2
    echo "$install_hint" >&2
    exit 1
fi
echo "ensure-postgres: PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')" >&2
