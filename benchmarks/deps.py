"""What the benchmark needs outside mailwright, and how it gets it.

- Postfix (Debian package ``postfix``): the load client ``smtp-source``, the
  sink ``smtp-sink`` and the real Postfix daemons for the comparison. Installed
  only on request (``--install``, as root), preseeded with "No configuration" so
  the package starts no system Postfix; the benchmark runs its own instance.
- aiosmtpd and py-spy (PyPI): installed on demand into a private venv under
  ``~/.cache/mailwright-bench`` so that they never become project dependencies.
- Exim and OpenSMTPD (Debian packages, for benchmarks/conformance.py): their
  packages conflict with Postfix and with each other (each provides
  mail-transport-agent), so they are never installed: ``apt-get download`` and
  ``dpkg -x`` unpack them under ``~/.cache/mailwright-bench/debian``, with the
  libraries they need that the system lacks; benchmarks/peers.py runs them from
  there.
"""

from __future__ import annotations

import os
import shutil
import stat
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


def cache_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mailwright-bench"


def venv_dir() -> Path:
    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_dir() / f"venv-{version}"


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


# ------------------------------------------------------------------ unpacked Debian packages


def debian_root() -> Path:
    """Where unpacked packages live: ``root/usr/sbin/exim4``, ``root/usr/sbin/smtpd`` ..."""
    return cache_dir() / "debian" / "root"


def unpacked_version(package: str) -> str | None:
    """The Debian version of ``package`` unpacked under debian_root(), or None."""
    marker = debian_root().parent / f"{package}.unpacked"
    try:
        return marker.read_text().strip() or None
    except OSError:
        return None


def library_path(mounted_at: Path | None = None) -> str:
    """LD_LIBRARY_PATH for the unpacked binaries: the libraries unpacked beside them.

    ``mounted_at``: where debian_root() is seen by the binary (a bind mount), if elsewhere.
    """
    root = debian_root()
    found = sorted((*root.glob("usr/lib/*-linux-gnu"), *root.glob("lib/*-linux-gnu")))
    return ":".join(str((mounted_at or root) / p.relative_to(root)) for p in found)


def installed(package: str) -> bool:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True
    )
    return out.returncode == 0 and out.stdout.endswith(" installed")


def apt_update() -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=600)


def unpack_debian_package(package: str) -> str:
    """``apt-get download`` + ``dpkg -x`` of ``package`` and its missing libraries.

    Nothing is installed: dpkg's database and the system's files stay as they
    were, so the unpacked MTA cannot conflict with the installed Postfix.  Of
    the package's dependencies only the shared libraries (``lib*``) that are
    not installed are unpacked too (one level: their own dependencies are in
    the base system); maintainer scripts never run.  Set-user-ID bits are
    removed: the lab runs these binaries as root itself, and a set-user-ID-root
    copy of a mail server left in a cache directory would be a hazard.
    Returns the package's version.
    """
    if not is_root():
        raise MissingTool(f"unpacking {package} needs root (apt-get download, dpkg -x)")
    downloads = cache_dir() / "debian" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    deb = _download(package, downloads)
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    libraries = [
        name
        for alternative in depends.split(",")
        if (name := alternative.split("|")[0].split("(")[0].strip()).startswith("lib")
        and not installed(name)
    ]
    for archive in (deb, *(_download(name, downloads) for name in libraries)):
        subprocess.run(["dpkg", "-x", str(archive), str(debian_root())], check=True, timeout=300)
    _drop_set_id_bits(debian_root())
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (debian_root().parent / f"{package}.unpacked").write_text(version + "\n")
    return version


def _download(package: str, directory: Path) -> Path:
    before = set(directory.glob(f"{package}_*.deb"))
    subprocess.run(["apt-get", "download", "-q", package], cwd=directory, check=True, timeout=600)
    fresh = set(directory.glob(f"{package}_*.deb"))
    newest = sorted(fresh - before or fresh, key=lambda p: p.stat().st_mtime)
    if not newest:
        raise MissingTool(f"apt-get download {package} left no .deb in {directory}")
    return newest[-1]


def _drop_set_id_bits(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode
            if mode & (stat.S_ISUID | stat.S_ISGID):
                path.chmod(mode & ~(stat.S_ISUID | stat.S_ISGID))
