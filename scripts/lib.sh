# Shared by the scripts: find uv, or install it into this checkout's .tools/ folder from PyPI.
#
# uv comes from, in this order: $UV (a uv executable you name), a uv on PATH, the `uv` module of
# python3, an earlier install in .tools/. Otherwise it is installed from PyPI into .tools/ with
# python3's own pip: in a virtual environment (never the system's Python, which Debian marks as
# externally managed, PEP 668), else with `pip install --target`; a Debian python3 that has neither
# venv nor pip gets python3-venv from apt first (as root or through sudo). No binary is downloaded
# outside the package registries, and pip's own settings (index, certificates, proxies) apply.
#
# Sourcing this file defines `uv` (a function calling the uv found) and sets UV_BIN to its path.

UV_VERSION_SPEC="uv>=0.5,<1"
export UV_PYTHON_DOWNLOADS=never  # use the machine's Python, never a downloaded one
# uv's own settings follow pip's where the machine sets only pip's (a mirror, a CA bundle)
[ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_DEFAULT_INDEX:-}${UV_INDEX_URL:-}" ] && export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
[ -n "${PIP_CERT:-}" ] && [ -z "${SSL_CERT_FILE:-}" ] && export SSL_CERT_FILE="$PIP_CERT"
# The project's environment is built with the version of the python3 on PATH unless UV_PYTHON names
# another (a version, not a path: an existing .venv of that version is then kept as it is).
if [ -z "${UV_PYTHON:-}" ]; then
  UV_PYTHON="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
  [ -n "$UV_PYTHON" ] && export UV_PYTHON
fi

_project_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_tools="$_project_root/.tools"

_uv_works() { [ -n "$1" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

find_uv() {
  local candidate
  for candidate in "${UV:-}" "$(type -P uv || true)" "$_tools/uv-venv/bin/uv" "$_tools/uv-target/bin/uv"; do
    if _uv_works "$candidate"; then echo "$candidate"; return 0; fi
  done
  candidate="$(python3 -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null || true)"
  if _uv_works "$candidate"; then echo "$candidate"; return 0; fi
  return 1
}

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else return 1; fi
}

install_uv() {
  mkdir -p "$_tools"
  echo "setup: installing $UV_VERSION_SPEC from PyPI into $_tools" >&2
  rm -rf "$_tools/uv-venv" "$_tools/uv-target"
  if python3 -m venv "$_tools/uv-venv" >/dev/null 2>&1 \
    && "$_tools/uv-venv/bin/python" -m pip install --quiet "$UV_VERSION_SPEC"; then
    return 0
  fi
  rm -rf "$_tools/uv-venv"
  if python3 -m pip --version >/dev/null 2>&1 \
    && python3 -m pip install --quiet --target "$_tools/uv-target" "$UV_VERSION_SPEC"; then
    return 0
  fi
  rm -rf "$_tools/uv-target"
  # Debian's python3 comes without venv and pip; they are Debian packages
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: python3 has no venv or pip; installing python3-venv with apt-get" >&2
    if _as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq python3-venv >/dev/null \
      && python3 -m venv "$_tools/uv-venv" \
      && "$_tools/uv-venv/bin/python" -m pip install --quiet "$UV_VERSION_SPEC"; then
      return 0
    fi
  fi
  echo "setup: could not install uv: python3 ($(command -v python3)) has neither a working venv nor pip." >&2
  echo "setup: install one of them (Debian/Ubuntu: apt-get install python3-venv), or install uv and run again." >&2
  return 1
}

if ! UV_BIN="$(find_uv)"; then
  install_uv || exit 1
  UV_BIN="$(find_uv)" || { echo "setup: uv was installed but does not run" >&2; exit 1; }
fi
export UV_BIN
uv() { "$UV_BIN" "$@"; }
