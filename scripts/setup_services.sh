#!/usr/bin/env bash
# Make the services the tests need exist and run: PostGIS, Mosquitto (non-dropping config), Chromium.
# As root it installs what is missing with apt; otherwise it says what to install and carries on
# (tests then skip locally, and fail under CI=true / TWIN_REQUIRE_SERVICES=1).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
PG_USER=${TWIN_PG_USER:-twin}
PG_PASSWORD=${TWIN_PG_PASSWORD:-twin}
PG_DB=${TWIN_PG_DB:-twin}
MQTT_PORT=${TWIN_TEST_MQTT_PORT:-18830}
say() { printf 'setup: %s\n' "$*"; }

need=()
dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 || ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)  # the benchmarks' C client
command -v chromium >/dev/null 2>&1 || need+=(chromium)
fc-list 2>/dev/null | grep -qi 'Noto Sans CJK' || need+=(fonts-noto-cjk)
command -v ogr2ogr >/dev/null 2>&1 || need+=(gdal-bin)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null \
      || say "apt-get install ${need[*]} failed"
  else
    say "missing: ${need[*]} — install them (sudo apt-get install -y ${need[*]}) or tests will skip"
  fi
fi

# PostgreSQL: start the cluster if it is down, then a login role and a database with PostGIS.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -n 1)
  if [ -n "$ver" ] && ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
    if [ "$(id -u)" = 0 ]; then
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start || say "could not start PostgreSQL $ver"
    fi
  fi
  if [ "$(id -u)" = 0 ]; then
    psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtAX "$@"; }
    if ! psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'" | grep -q 1; then
      psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" || say "could not create role"
    fi
    if ! psql_admin -c "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
      psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" || say "could not create database"
    fi
    psql_admin -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS postgis" || say "could not enable PostGIS"
  fi
fi

# Mosquitto: our own broker for tests, configured not to drop queued QoS 1 messages.
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  mq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  if ! (exec 3<>/dev/tcp/127.0.0.1/"$MQTT_PORT") 2>/dev/null; then
    conf=$(mktemp /tmp/gridtwin-mosquitto.XXXX.conf)
    sed "s/^listener .*/listener $MQTT_PORT 127.0.0.1/" "$here/data/mosquitto.conf" > "$conf"
    "$mq" -d -c "$conf" && say "mosquitto started on 127.0.0.1:$MQTT_PORT"
  fi
fi
exit 0
