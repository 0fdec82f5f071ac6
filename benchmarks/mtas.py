"""Exim and OpenSMTPD, run from their unpacked Debian packages (see deps.py), for the lab.

Both were built to be installed: they look up their system users by name
(``Debian-exim``; ``opensmtpd`` and ``opensmtpq``) and OpenSMTPD keeps its queue
and control socket at compiled-in paths under /var and runs its delivery agents
from /usr/libexec/opensmtpd.  Rather than create those users and directories on
the machine, each server starts in a private mount namespace (``unshare
--mount``) where a copy of /etc/passwd and /etc/group with the users added, a
private /var in the server's temporary directory, and an overlay that adds the
unpacked /usr/libexec are mounted over the real ones.  Nothing outside the
namespace sees them; they vanish with the process.

Each accepts mail for user@bench.test and the postmaster of bench.test and of
its own host name into one Maildir in its temporary directory, listens on
127.0.0.1 only, and relays nothing.  Neither offers STARTTLS (no certificate
in the lab; none of the servers compared does).
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from pathlib import Path

import deps
from servers import (
    LOCAL_DOMAIN,
    LOOPBACK,
    START_TIMEOUT,
    Server,
    ServerError,
    count_files,
    free_port,
    wait_for_greeting,
)

#: The lab's mailboxes: what an MX for bench.test would have (never a catch-all,
#: which takes ``relaytest%elsewhere@bench.test`` as a local user and so hides
#: whether the server would relay it).
LAB_USER = f"user@{LOCAL_DOMAIN}"


def lab_mailboxes(hostname: str) -> tuple[str, ...]:
    """user@bench.test and postmaster of both domains (RFC 5321 4.5.1)."""
    return (LAB_USER, f"postmaster@{LOCAL_DOMAIN}", f"postmaster@{hostname}")


#: The first user and group id tried for the private users (above the usual system range).
PRIVATE_ID_BASE = 64900
#: Attempts at binding a free port that another process may take in between.
PORT_ATTEMPTS = 3


def free_ids(count: int) -> list[int]:
    """``count`` numbers free both as a user id and a group id on this machine."""
    used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    found: list[int] = []
    candidate = PRIVATE_ID_BASE
    while len(found) < count:
        if candidate not in used:
            found.append(candidate)
        candidate += 1
    return found


class UnpackedMta(Server):
    """A server run from deps.debian_root() inside its own mount namespace."""

    package = ""
    binary = ""
    #: System users the binary looks up by name; each gets a private id.
    users: tuple[str, ...] = ()

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.maildir = workdir / "mail" / "box"
        #: debian_root() as the server sees it: the cache is under /root, which
        #: the server's own users cannot enter, so it is bind-mounted here.
        self.packages = workdir / "packages"
        self.ids = dict(zip(self.users, free_ids(len(self.users)), strict=True))
        self.hostname = f"{self.name}.{LOCAL_DOMAIN}"
        self.domains = (LOCAL_DOMAIN, self.hostname)

    @property
    def executable(self) -> Path:
        """The binary's path inside the namespace."""
        relative = self.binary.lstrip("/")
        if (
            deps.unpacked_version(self.package) is None
            or not (deps.debian_root() / relative).exists()
        ):
            raise ServerError(f"{self.package} is not unpacked: run with --install")
        return self.packages / relative

    def version(self) -> str:
        return deps.unpacked_version(self.package) or "not unpacked"

    def mounts(self) -> list[list[str]]:
        """``mount`` argument lists run in the namespace before the server starts."""
        passwd = self.workdir / "passwd"
        group = self.workdir / "group"
        passwd.write_text(
            Path("/etc/passwd").read_text()
            + "".join(
                f"{user}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
                for user, uid in self.ids.items()
            )
        )
        group.write_text(
            Path("/etc/group").read_text()
            + "".join(f"{user}:x:{gid}:\n" for user, gid in self.ids.items())
        )
        self.packages.mkdir(exist_ok=True)
        return [
            ["--bind", str(passwd), "/etc/passwd"],
            ["--bind", str(group), "/etc/group"],
            ["--bind", str(deps.debian_root()), str(self.packages)],
        ]

    def argv(self) -> list[str]:
        raise NotImplementedError

    def configure(self) -> None:
        """Write the configuration for ``self.port``."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Directories, owned as the server expects."""
        raise NotImplementedError

    def start(self) -> None:
        if not deps.is_root():
            raise ServerError(f"{self.label} needs root (a private mount namespace)")
        self.prepare()
        self.workdir.chmod(0o755)
        setup = " && ".join(shlex.join(["mount", *m]) for m in self.mounts())
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.configure()
            command = f"{setup} && exec {shlex.join(self.argv())}"
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
            proc = self._spawn(argv)
            try:
                wait_for_greeting(self.port, proc, START_TIMEOUT)
                return
            except ServerError as exc:
                self.stop()
                if attempt == PORT_ATTEMPTS - 1:
                    raise ServerError(f"{exc}: {self.tail()}") from exc

    def _env(self) -> list[str]:
        return ["env", f"LD_LIBRARY_PATH={deps.library_path(self.packages)}"]

    def delivered(self) -> int | None:
        return count_files(self.maildir / "new")

    def _own(self, user: str, *directories: Path) -> None:
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, self.ids[user], self.ids[user])


class Exim(UnpackedMta):
    name = "exim"
    label = "Exim"
    package = "exim4-daemon-light"
    binary = "/usr/sbin/exim4"
    users = ("Debian-exim",)
    stores = "spool file, then Maildir (appendfile)"

    def prepare(self) -> None:
        self._own("Debian-exim", self.workdir / "spool", self.workdir / "log", self.maildir.parent)

    def configure(self) -> None:
        # exim_path: delivery re-executes Exim, by default from /usr/sbin.
        # The delivery process runs as Debian-exim ("exim user lost privilege
        # for using -C option" in the log): Exim's rule for a configuration
        # file not listed in TRUSTED_CONFIG_LIST; that user owns the Maildir.
        work = self.workdir
        config = f"""\
primary_hostname = {self.hostname}
domainlist local_domains = {" : ".join(self.domains)}
exim_path = {self.executable}
keep_environment = LD_LIBRARY_PATH
spool_directory = {work / "spool"}
log_file_path = {work / "log"}/%slog
pid_file_path = {work / "exim.pid"}
local_interfaces = {LOOPBACK}
daemon_smtp_ports = {self.port}
daemon_startup_retries = 0
never_users = root
rfc1413_query_timeout = 0s
tls_advertise_hosts =
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  deny message = relay not permitted
       domains = !+local_domains
  require verify = recipient
  accept

begin routers
mailbox:
  driver = accept
  domains = +local_domains
  local_parts = user : postmaster
  transport = maildir

begin transports
maildir:
  driver = appendfile
  directory = {self.maildir}
  maildir_format
  create_directory
  user = Debian-exim
"""
        (work / "exim.conf").write_text(config)

    def argv(self) -> list[str]:
        return [*self._env(), str(self.executable), "-C", str(self.workdir / "exim.conf"), "-bdf"]


class OpenSmtpd(UnpackedMta):
    name = "opensmtpd"
    label = "OpenSMTPD"
    package = "opensmtpd"
    binary = "/usr/sbin/smtpd"
    users = ("opensmtpd", "opensmtpq")
    stores = "queue file, then Maildir (mail.maildir, as nobody)"

    def prepare(self) -> None:
        var = self.workdir / "var"
        # smtpd checks these modes at start ("must be rwx--x--x (711)").
        for directory, mode in (
            (var / "spool" / "smtpd", 0o711),
            (var / "lib" / "opensmtpd" / "empty", 0o755),
            (var / "run", 0o755),
        ):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(mode)
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.maildir.parent, nobody.pw_uid, nobody.pw_gid)

    def mounts(self) -> list[list[str]]:
        libexec = deps.debian_root() / "usr" / "libexec"
        return [
            *super().mounts(),
            ["--bind", str(self.workdir / "var"), "/var"],
            ["-t", "overlay", "overlay", "-o", f"lowerdir={libexec}:/usr/libexec", "/usr/libexec"],
        ]

    def configure(self) -> None:
        mailboxes = "".join(f"{a} nobody\n" for a in lab_mailboxes(self.hostname))
        (self.workdir / "vusers").write_text(mailboxes)
        domains = ", ".join(f'"{d}"' for d in self.domains)
        config = f"""\
table vusers file:{self.workdir / "vusers"}
listen on {LOOPBACK} port {self.port} hostname {self.hostname}
action "deliver" maildir "{self.maildir}" virtual <vusers>
match from any for domain {{ {domains} }} action "deliver"
"""
        (self.workdir / "smtpd.conf").write_text(config)

    def argv(self) -> list[str]:
        return [*self._env(), str(self.executable), "-d", "-f", str(self.workdir / "smtpd.conf")]
