# Shared by the scripts: run uv whether or not its binary landed on PATH after `pip install uv`.
export UV_PYTHON_DOWNLOADS=never  # use the machine's Python, never a downloaded one
export PATH="$HOME/.local/bin:$PATH"
uv() {
  if command -v uv >/dev/null 2>&1; then command uv "$@"; else python3 -m uv "$@"; fi
}
