# shellcheck shell=bash
# Sourced by the bench/ scripts: what they share.

need() { # need COMMAND PACKAGE: install PACKAGE from Debian when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $2 (for $1)"
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# port_of FILE: the port from a "listening on http://IP:PORT" first line, or nothing.
port_of() {
  local line=""
  IFS= read -r line <"$1" 2>/dev/null || true
  if [[ $line =~ ^listening\ on\ http://.*:([0-9]+)$ ]]; then
    echo "${BASH_REMATCH[1]}"
  fi
}

now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }

# children PID: PID's child processes (a supervised jwtguard's worker), space-separated.
children() { cat "/proc/$1/task/"*/children 2>/dev/null || true; }

# serving PID: the process that serves: the worker of jwtguard's supervisor PID, or PID
# itself (run with --no-supervisor, or another server).
serving() {
  local c
  c=$(children "$1")
  c=${c%% *}
  echo "${c:-$1}"
}

# cpu_ticks PID: utime + stime of PID and of its children (jwtguard's supervisor and its
# worker), in clock ticks.
cpu_ticks() {
  local p stat total=0
  for p in "$1" $(children "$1"); do
    stat=$(<"/proc/$p/stat") || continue
    stat=${stat##*) } # fields after "(comm) "; utime and stime are fields 14 and 15
    total=$((total + $(awk '{ print $12 + $13 }' <<<"$stat")))
  done
  echo "$total"
}

# own_ticks PID: utime + stime of PID alone (the supervisor without its worker).
own_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# pss_kib PID: the proportional set size of PID (shared pages split among their users), KiB.
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }

# switches PID: context switches (voluntary and not) of the process's threads alive now.
# A thread that exited takes its count with it: compare runs whose threads live on.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}

# children_cpu_us: sets CHILD_US to the user + system time of this shell's reaped
# children so far, in µs (`times` must run in this shell, not in a command substitution).
# Needs $TMP.
children_cpu_us() {
  times >"$TMP/times"
  # shellcheck disable=SC2034 # read by the sourcing script
  CHILD_US=$(awk 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s$/, "", p[2]); t += p[1] * 60 + p[2] }
    printf "%.0f\n", t * 1000000 }' "$TMP/times")
}

# vm_hwm PID: peak resident set size of the process so far, KiB.
vm_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# to_us VALUE: a wrk duration (12.3us, 1.2ms, 1.0s) in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
    printf "%.1f", n }'
}

median() { # median VALUES...
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# strip_size BINARY: the size of a stripped copy, bytes. Needs $TMP.
strip_size() {
  cp "$1" "$TMP/stripped"
  strip "$TMP/stripped"
  stat -c %s "$TMP/stripped"
}

# scratch NAME: a temporary directory in $TMP, and $PIDS, the processes started and not yet
# reaped: on exit every one is killed by its PID and the directory removed.
scratch() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/jwtguard-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
