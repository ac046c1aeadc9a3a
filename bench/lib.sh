# Sourced by bench/run.sh and bench/variants.sh.

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
