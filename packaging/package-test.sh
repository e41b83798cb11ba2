#!/usr/bin/env bash
# Builds the Debian packages and tries them on this machine, then leaves it as it was:
#   1. the release preset, then `cpack -G DEB`: mgmtd_<v>_<arch>.deb and mgmtd-dev_<v>_<arch>.deb
#      (in build/release/packages/); their contents are checked;
#   2. `dpkg -i` of both; `mgmtd --check` of the installed /etc/mgmtd/mgmt.yaml;
#   3. the installed /usr/bin/mgmtd on a temporary socket (JSON logs, a ready file), driven
#      with the installed mgmtctl (list, info, metrics) and scraped over HTTP;
#   3b. dpkg -i again over a running mgmtd: the postinst upgrades it in place;
#   4. an out-of-tree plugin built against the installed SDK (mgmtd-dev);
#   5. `dpkg --purge` of both, and a check that none of their files is left.
# Needs root (or sudo) for dpkg. Refuses to run when mgmtd is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) == 0 ]] || SUDO=sudo
BUILD=build/release
start=$SECONDS
say() { echo "package-test: $*"; }
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }

for p in mgmtd mgmtd-dev; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "installed"; then
    fail "$p is already installed on this machine; not touching it (dpkg --purge $p first)"
  fi
done
[[ -e /etc/mgmtd ]] && fail "/etc/mgmtd exists and belongs to no package; move it away first"

# --- 1. build and package ---------------------------------------------------------------
cmake --preset release >/dev/null
flock /tmp/mgmt-build.lock cmake --build "$BUILD"
rm -rf "$BUILD/packages"
(cd "$BUILD" && cpack -G DEB >cpack.log 2>&1) || { cat "$BUILD/cpack.log"; fail "cpack"; }
shopt -s nullglob
server_deb=("$BUILD"/packages/mgmtd_*.deb)
dev_deb=("$BUILD"/packages/mgmtd-dev_*.deb)
shopt -u nullglob
((${#server_deb[@]} == 1 && ${#dev_deb[@]} == 1)) || fail "expected one mgmtd and one mgmtd-dev package in $BUILD/packages"
say "built $(basename "${server_deb[0]}") and $(basename "${dev_deb[0]}")"

server_files=$(dpkg-deb -c "${server_deb[0]}" | awk '{print $6}' | sed 's|^\./|/|')
dev_files=$(dpkg-deb -c "${dev_deb[0]}" | awk '{print $6}' | sed 's|^\./|/|')
for f in /usr/bin/mgmtd /usr/bin/mgmtctl /usr/lib/libmgmt.so.0 /usr/lib/mgmtd/plugins/process.so \
  /usr/lib/mgmtd/mgmtd-spawn \
  /usr/lib/mgmtd/plugins/list.so /usr/lib/mgmtd/plugins/metrics.so /etc/mgmtd/mgmt.yaml \
  /usr/lib/systemd/system/mgmtd.service /usr/lib/systemd/system/mgmtd.socket \
  /usr/share/man/man8/mgmtd.8.gz \
  /usr/share/man/man1/mgmtctl.1.gz /usr/share/bash-completion/completions/mgmtctl; do
  grep -qx "$f" <<<"$server_files" || fail "mgmtd lacks $f"
done
for f in /usr/include/mgmt/plugin.hpp /usr/lib/libmgmt.so /usr/lib/cmake/mgmt/mgmtConfig.cmake \
  /usr/lib/cmake/mgmt/mgmtTargets.cmake /usr/lib/cmake/mgmt/MgmtPlugin.cmake; do
  grep -qx "$f" <<<"$dev_files" || fail "mgmtd-dev lacks $f"
done
grep -q '^/usr/include/' <<<"$server_files" && fail "mgmtd ships headers (they belong in mgmtd-dev)"
overlap=$(comm -12 <(grep -v '/$' <<<"$server_files" | sort) <(grep -v '/$' <<<"$dev_files" | sort))
[[ -z $overlap ]] || fail "both packages ship: $overlap"
dpkg-deb -e "${server_deb[0]}" "$BUILD/packages/control"
grep -qx /etc/mgmtd/mgmt.yaml "$BUILD/packages/control/conffiles" || fail "mgmt.yaml is not a conffile"
say "depends: $(dpkg-deb -f "${server_deb[0]}" Depends)"
say "mgmtd-dev depends: $(dpkg-deb -f "${dev_deb[0]}" Depends)"

# --- 2. install ---------------------------------------------------------------------------
TMP=$(mktemp -d /tmp/mgmt-package-test.XXXXXX)
run_existed=0
[[ -e /run/mgmtd ]] && run_existed=1
MGMTD_PID=""
cleanup() {
  local rc=$?
  if [[ -n $MGMTD_PID ]] && kill -0 "$MGMTD_PID" 2>/dev/null; then
    kill -TERM "$MGMTD_PID" 2>/dev/null || true
    wait "$MGMTD_PID" 2>/dev/null || true
  fi
  $SUDO dpkg --purge mgmtd-dev mgmtd >/dev/null 2>&1 || true
  ((run_existed)) || $SUDO rm -rf /run/mgmtd
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
$SUDO dpkg -i "${server_deb[0]}" "${dev_deb[0]}" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log"; fail "dpkg -i"; }
say "installed"

/usr/bin/mgmtd --version
/usr/bin/mgmtd --check -c /etc/mgmtd/mgmt.yaml >"$TMP/check.out" || { cat "$TMP/check.out"; fail "mgmtd --check"; }
grep -q "/usr/lib/mgmtd/plugins/process.so" "$TMP/check.out" || fail "the installed mgmtd did not load its plugins from /usr/lib/mgmtd/plugins"
say "mgmtd --check -c /etc/mgmtd/mgmt.yaml: OK"
man_head=$(zcat /usr/share/man/man8/mgmtd.8.gz | head -n 5)
grep -q '^\.TH MGMTD 8' <<<"$man_head" || fail "man page mgmtd(8)"
bash -c 'source /usr/share/bash-completion/completions/mgmtctl && complete -p mgmtctl' >/dev/null ||
  fail "bash completion"
# The units as systemd reads them: any complaint (a misspelt key, an unknown type, a command
# that is not executable) fails the test. Their man pages are checked above, not by `man`.
if command -v systemd-analyze >/dev/null; then
  verify=$(systemd-analyze verify --man=no /usr/lib/systemd/system/mgmtd.socket \
    /usr/lib/systemd/system/mgmtd.service 2>&1) || fail "systemd-analyze verify: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify complains: $verify"
  say "systemd-analyze verify mgmtd.socket mgmtd.service: OK"
else
  fail "systemd-analyze is missing (package systemd): the units cannot be verified"
fi

# --- 3. run the installed server -----------------------------------------------------------
SOCK=$TMP/manager.sock
/usr/bin/mgmtd -c /etc/mgmtd/mgmt.yaml --socket "$SOCK" --log-format json \
  --ready-file "$TMP/ready" >"$TMP/mgmtd.log" 2>&1 &
MGMTD_PID=$!
for _ in $(seq 200); do [[ -e $TMP/ready ]] && break; kill -0 $MGMTD_PID 2>/dev/null || break; sleep 0.05; done
[[ -e $TMP/ready ]] || { cat "$TMP/mgmtd.log"; fail "the installed mgmtd did not become ready"; }
/usr/bin/mgmtctl --socket "$SOCK" list | tee "$TMP/list.out"
grep -q '^ID  NAME  STATE  PID$' "$TMP/list.out" || fail "mgmtctl list"
info=$(/usr/bin/mgmtctl --socket "$SOCK" info) || fail "mgmtctl info"
grep -q "/usr/lib/mgmtd/plugins/metrics.so" <<<"$info" || fail "mgmtctl info: no metrics plugin from /usr/lib/mgmtd/plugins"
metrics=$(/usr/bin/mgmtctl --socket "$SOCK" metrics) || fail "mgmtctl metrics"
grep -q '^mgmtd_build_info{version=' <<<"$metrics" || fail "mgmtctl metrics: no mgmtd_build_info"
# The HTTP endpoint opens once the socket listens (or says the port is taken).
for _ in $(seq 100); do grep -qE 'serving metrics on|cannot serve metrics on' "$TMP/mgmtd.log" && break; sleep 0.05; done
if grep -q 'serving metrics on http://127.0.0.1:9464' "$TMP/mgmtd.log" && command -v curl >/dev/null; then
  scrape=$(curl -fsS http://127.0.0.1:9464/metrics) || fail "GET /metrics"
  grep -q '^mgmtd_connections_open ' <<<"$scrape" || fail "GET /metrics: no mgmtd_connections_open"
  say "GET http://127.0.0.1:9464/metrics: OK"
else
  say "port 9464 is taken on this machine: HTTP scrape skipped"
fi
kill -TERM $MGMTD_PID
rc=0
wait $MGMTD_PID || rc=$?
MGMTD_PID=""
((rc == 0)) || { cat "$TMP/mgmtd.log"; fail "mgmtd exited $rc after SIGTERM"; }
[[ ! -e $TMP/ready ]] || fail "the ready file outlived mgmtd"
python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$TMP/mgmtd.log" ||
  fail "the JSON log has a line that is not JSON"
say "the installed server ran, answered and stopped cleanly"

# --- 3b. the package upgrade path ----------------------------------------------------------
# Installing the package again over a running service is an upgrade (postinst configure
# <old version>): the postinst must replace the running mgmtd in place, with the supervised
# process keeping its pid, and never restart the service. systemd is not PID 1 here: in a
# private mount namespace /run/systemd/system exists, and a systemctl stand-in says the
# service is active with this mgmtd as its main pid, and records what it was asked.
if unshare -m --propagation private true 2>/dev/null; then
  mkdir -p "$TMP/fakebin"
  cat >"$TMP/fakebin/systemctl" <<'SH'
#!/bin/sh
echo "$*" >>"$FAKE_SYSTEMCTL_LOG"
case "$*" in
  *MainPID*) cat "$FAKE_MAIN_PID" ;;
esac
exit 0
SH
  chmod 755 "$TMP/fakebin/systemctl"
  cat >"$TMP/upgrade.yaml" <<YAML
server: {runtime_dir: /run/mgmtd, write_hint: false}
backend:
  plugin: process
  config:
    state_dir: $TMP/state
    processes:
      - {id: worker, command: /bin/sleep, args: ["1000"]}
commands:
  0xAC: info
  0xAF: upgrade
YAML
  cat >"$TMP/upgrade-path.sh" <<'SH'
set -euo pipefail
mount -t tmpfs tmpfs /run/systemd 2>/dev/null || { mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; }
mkdir /run/systemd/system
/usr/bin/mgmtd -c "$TMP/upgrade.yaml" --ready-file "$TMP/up-ready" >"$TMP/up.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
echo $pid >"$FAKE_MAIN_PID"
for _ in $(seq 200); do [[ -e $TMP/up-ready ]] && break; sleep 0.05; done
CTL="/usr/bin/mgmtctl --runtime-dir /run/mgmtd"
worker_pid() { $CTL list | awk '$1 == "worker" { print $4 }'; }
for _ in $(seq 200); do [[ $(worker_pid) =~ ^[1-9] ]] && break; sleep 0.05; done
before=$(worker_pid)
[[ $before =~ ^[1-9] ]] || { cat "$TMP/up.log"; echo "the worker did not start"; exit 1; }
PATH="$TMP/fakebin:$PATH" dpkg -i "$DEB" >"$TMP/dpkg-upgrade.log" 2>&1 ||
  { cat "$TMP/dpkg-upgrade.log"; echo "dpkg -i over the running service failed"; exit 1; }
info=$($CTL info) || { cat "$TMP/up.log"; echo "no answer after the upgrade"; exit 1; }
grep -q "upgrade 1" <<<"$info" || { echo "$info"; cat "$TMP/dpkg-upgrade.log" "$TMP/up.log"; echo "mgmtd was not upgraded in place"; exit 1; }
[[ $(worker_pid) == "$before" ]] || { echo "the worker's pid changed: $before -> $(worker_pid)"; exit 1; }
kill -0 "$pid" || { echo "mgmtd is gone"; exit 1; }
if grep -q restart "$FAKE_SYSTEMCTL_LOG"; then echo "the postinst restarted the service"; exit 1; fi
echo "pid $pid kept, worker pid $before kept"
SH
  : >"$TMP/systemctl.log"
  out=$(TMP=$TMP DEB=${server_deb[0]} FAKE_SYSTEMCTL_LOG=$TMP/systemctl.log \
    FAKE_MAIN_PID=$TMP/main.pid unshare -m --propagation private bash "$TMP/upgrade-path.sh" 2>&1) ||
    fail "the package upgrade path: $out"
  say "dpkg -i over a running mgmtd upgraded it in place: $out"
else
  say "no mount namespace here (unshare -m refused): the package upgrade path was not tried"
fi

# --- 4. the SDK: an out-of-tree plugin against /usr --------------------------------------
cmake -S examples/hello-command -B "$TMP/sdk" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$TMP/sdk.log" 2>&1 &&
  cmake --build "$TMP/sdk" >>"$TMP/sdk.log" 2>&1 || { cat "$TMP/sdk.log"; fail "building examples/hello-command against mgmtd-dev"; }
cat >"$TMP/sdk.yaml" <<YAML
server: {socket: $SOCK, write_hint: false}
backend: {plugin: process}
commands:
  0xAD: {plugin: $(find "$TMP/sdk" -name hello.so | head -n1), config: {greeting: Hi}}
YAML
/usr/bin/mgmtd --check -c "$TMP/sdk.yaml" >/dev/null || fail "the installed mgmtd refuses a plugin built with mgmtd-dev"
say "a plugin built against mgmtd-dev loads into the installed mgmtd"

# --- 5. remove ------------------------------------------------------------------------------
files=$(dpkg -L mgmtd mgmtd-dev)
$SUDO dpkg --purge mgmtd-dev mgmtd >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log"; fail "dpkg --purge"; }
left=""
while read -r f; do
  [[ -z $f || -d $f ]] && continue  # shared folders (/usr/lib, ...) stay
  [[ -e $f || -L $f ]] && left+=" $f"
done <<<"$files"
[[ -z $left ]] || fail "left behind after purge:$left"
for d in /etc/mgmtd /usr/lib/mgmtd /usr/include/mgmt /usr/lib/cmake/mgmt; do
  [[ ! -e $d ]] || fail "$d is still there after purge"
done
say "purged; nothing left ($((SECONDS - start)) s)"
