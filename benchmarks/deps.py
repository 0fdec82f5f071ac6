"""What the benchmark needs outside mailwright, and how it gets it.

- Postfix (Debian package ``postfix``): the load client ``smtp-source``, the
  sink ``smtp-sink`` and the real Postfix daemons for the comparison. Installed
  only on request (``--install``, as root), preseeded with "No configuration" so
  the package starts no system Postfix; the benchmark runs its own instance.
- aiosmtpd and py-spy (PyPI): installed on demand into a private venv under
  ``~/.cache/mailwright-bench`` so that they never become project dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

POSTFIX_TOOLS = ("smtp-source", "smtp-sink", "postconf", "postfix")
VENV_PACKAGES = ("aiosmtpd", "py-spy")
INSTALL_HINT = (
    "as root: python benchmarks/run.py --install  "
    "(= apt-get install postfix with debconf 'No configuration'; starts no system Postfix)"
)


class MissingTool(RuntimeError):
    """A tool is missing; the message says in one line how to get it."""


def is_root() -> bool:
    return os.geteuid() == 0


def missing_postfix_tools() -> list[str]:
    return [tool for tool in POSTFIX_TOOLS if find_tool(tool) is None]


def find_tool(name: str) -> str | None:
    """Postfix puts its tools in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise MissingTool(f"{name} not found; {INSTALL_HINT}")
    return path


def postfix_daemon_directory() -> Path:
    out = subprocess.run(
        [require_tool("postconf"), "-dh", "daemon_directory"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Path(out.stdout.strip())


def install_postfix() -> None:
    """apt-get install postfix without a system configuration (Debian, as root)."""
    if not is_root():
        raise MissingTool("installing Postfix needs root; " + INSTALL_HINT)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    preseed = (
        "postfix postfix/main_mailer_type select No configuration\n"
        "postfix postfix/mailname string localhost\n"
    )
    print("installing postfix (apt-get, debconf: No configuration) ...", flush=True)
    subprocess.run(["debconf-set-selections"], input=preseed, text=True, check=True, timeout=60)
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "postfix"], env=env, check=True, timeout=900)
    stop_system_postfix()


def stop_system_postfix() -> None:
    """Make sure no Postfix with the system configuration is left running (port 25)."""
    postfix = find_tool("postfix")
    if postfix is None or not Path("/etc/postfix/main.cf").exists():
        return
    status = subprocess.run([postfix, "status"], capture_output=True, timeout=30)
    if status.returncode == 0:
        print("stopping the system Postfix that the package started", flush=True)
        subprocess.run([postfix, "stop"], capture_output=True, timeout=60)


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache / "mailwright-bench" / f"venv-{version}"


def venv_python() -> Path:
    """The private venv's python, with aiosmtpd and py-spy installed (created on demand)."""
    directory = venv_dir()
    python = directory / "bin" / "python"
    marker = directory / ".installed"
    if marker.exists() and python.exists():
        return python
    print(f"creating {directory} with {', '.join(VENV_PACKAGES)} (pip) ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    try:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True, timeout=900
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise MissingTool(
            f"pip could not install {' '.join(VENV_PACKAGES)} into {directory}: {exc}"
        ) from exc
    marker.write_text(" ".join(VENV_PACKAGES) + "\n")
    return python


def py_spy() -> Path:
    return venv_python().parent / "py-spy"
