"""The servers under test, each started in its own temporary directory on loopback.

Every server runs as its own process group (``start_new_session``) and is
stopped with SIGTERM, then SIGKILL to the whole group: nothing outlives the run.

- mailwright: ``python -m mailwright serve`` with a generated TOML; every
  recipient in bench.test gets a Maildir (auto_mailbox), or, in forward mode,
  all mail is relayed to a next hop through ``[routes] "*"``.
- Postfix: its own instance (main.cf and master.cf in the temp dir, the queue
  there too) listening on a loopback port; mail for bench.test goes to a Maildir
  through virtual(8), or everything to a next hop through ``relayhost``.
  Postfix's master must start as root; its daemons drop to ``mail_owner``
  (the ``postfix`` user the package creates).
- aiosmtpd: benchmarks/aiosmtpd_server.py in the private venv (no-op or fsync).
- smtp-sink: Postfix's test server that throws mail away: the ceiling.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import deps
import procstat

LOOPBACK = "127.0.0.1"
LOCAL_DOMAIN = "bench.test"
REMOTE_DOMAIN = "sink.test"
LOCAL_RECIPIENT = f"user@{LOCAL_DOMAIN}"
REMOTE_RECIPIENT = f"user@{REMOTE_DOMAIN}"
SENDER = "bench@client.test"
START_TIMEOUT = 30.0
STOP_GRACE = 15.0
#: Large enough for 1000 idle connections plus the benchmark's own slack.
MAX_CONNECTIONS = 2000
#: Room for the 20 MB messages plus headers (mailwright's default is 25 MiB).
MAX_MESSAGE_SIZE = 30_000_000
LISTEN_BACKLOG = 2048
LOWEST_PORT = 20000


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    """A free loopback port below the ephemeral range, where no client can be using it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    high = max(low - 1, LOWEST_PORT + 1000)
    for _ in range(500):
        port = random.randint(LOWEST_PORT, high)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise ServerError("no free loopback port found")


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


def wait_for_greeting(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until a 220 greeting arrives on ``port``; fails early when the process exits."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
                greeting = sock.recv(512)
                if greeting.startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    with contextlib.suppress(OSError):
                        sock.recv(512)
                    return
                last = ServerError(f"greeting {greeting[:60]!r}")
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise ServerError(f"no greeting on port {port} within {timeout:.0f} s: {last}")


class Server:
    """A server process; subclasses say how to configure, start and count deliveries."""

    name = "server"
    label = "server"
    #: What a 250 after DATA means for this server, for the report.
    stores = ""
    recipient = LOCAL_RECIPIENT

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = workdir / f"{self.name}.out"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def delivered(self) -> int | None:
        """Messages stored so far (Maildir files, ...); None when the server keeps none."""
        return None

    def _spawn(
        self, argv: list[str], *, cwd: Path | None = None, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd or self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else out,
                stderr=out,
                start_new_session=True,
            )
        return self.proc

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.output.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_GRACE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class Mailwright(Server):
    """``mailwright serve`` as an operator would run it on this machine.

    ``processes`` is ``[smtp] processes``: "auto" (one per CPU, the setting for
    a busy server; see docs/performance.md) unless --mailwright-processes says.
    """

    processes: str | int = "auto"
    name = "mailwright"
    label = "mailwright"
    stores = "SQLite queue (fsync, group commit), then Maildir (fsync)"
    #: The local domains: any user@ gets a Maildir, unless ``mailboxes`` names them.
    domains: tuple[str, ...] = (LOCAL_DOMAIN,)
    mailboxes: tuple[str, ...] = ()

    def __init__(self, workdir: Path, *, forward_to: int | None = None) -> None:
        super().__init__(workdir)
        self.forward_to = forward_to
        if forward_to is not None:
            self.recipient = REMOTE_RECIPIENT
            self.stores = "SQLite queue (fsync), then SMTP to smtp-sink"

    def config(self) -> str:
        lines = [
            f'hostname = "mailwright.{LOCAL_DOMAIN}"',
            'data_dir = "data"',
            "[smtp]",
            f'listen = ["{LOOPBACK}:0"]',
            f"max_connections = {MAX_CONNECTIONS}",
            f"max_connections_per_ip = {MAX_CONNECTIONS}",
            f"max_message_size = {MAX_MESSAGE_SIZE}",
            f"processes = {json.dumps(self.processes)}",
            "[domains]",
            f"local = {json.dumps(list(self.domains))}",
            f"auto_mailbox = {json.dumps([] if self.mailboxes else list(self.domains))}",
        ]
        if self.mailboxes:
            lines += ["[mailboxes]", *(f"{json.dumps(a)} = {{}}" for a in self.mailboxes)]
        if self.forward_to is not None:
            lines += [
                "[relay]",
                'networks = ["127.0.0.0/8"]',
                "[routes]",
                f'"*" = "{LOOPBACK}:{self.forward_to}"',
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        config = self.workdir / "mailwright.toml"
        config.write_text(self.config())
        proc = self._spawn([sys.executable, "-m", "mailwright", "serve", "--config", str(config)])
        self.port = self._wait_listening(proc)
        wait_for_greeting(self.port, proc, START_TIMEOUT)

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> int:
        """The port from the ``event=listening address=HOST:PORT`` log line."""
        pattern = re.compile(rb"event=listening address=[^ ]*:(\d+)")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(f"mailwright exited ({proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError):
                match = pattern.search(self.output.read_bytes())
                if match:
                    return int(match.group(1))
            time.sleep(0.05)
        raise ServerError(f"mailwright printed no event=listening line: {self.tail()}")

    def delivered(self) -> int | None:
        if self.forward_to is not None:
            return None
        return count_files(self.workdir / "data" / "mailboxes" / LOCAL_DOMAIN / "user" / "new")


#: The PostgreSQL server of the ``mailwright-postgresql`` rows (a database is made on it
#: for each measurement and dropped after); the tests' server by default.
BENCH_PG_URL = os.environ.get(
    "MAILWRIGHT_BENCH_PG_URL",
    os.environ.get("MAILWRIGHT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
)


class MailwrightPostgres(Mailwright):
    """``mailwright serve`` with ``[queue] backend = "postgresql"``: the shared queue of a
    cluster, on one node, the database on this machine (BENCH_PG_URL's server)."""

    name = "mailwright-postgresql"
    label = "mailwright (PostgreSQL)"
    stores = "PostgreSQL queue (synchronous_commit, group commit), then Maildir (fsync)"

    def __init__(self, workdir: Path, *, forward_to: int | None = None) -> None:
        super().__init__(workdir, forward_to=forward_to)
        if forward_to is not None:
            self.stores = "PostgreSQL queue (synchronous_commit), then SMTP to smtp-sink"
        self.database = f"mailwright_bench_{random.getrandbits(32):08x}"

    def config(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(BENCH_PG_URL)
        user = f"{parts['user']}@" if parts.get("user") else ""
        port = f":{parts['port']}" if parts.get("port") else ""
        url = f"postgresql://{user}{parts.get('host', 'localhost')}{port}/{self.database}"
        make_conninfo(url)  # libpq's check, as mailwright's own
        return super().config() + f'[queue]\nbackend = "postgresql"\nurl = "{url}"\n'

    def _admin(self, sql: str) -> None:
        import psycopg

        try:
            with psycopg.connect(BENCH_PG_URL, autocommit=True, connect_timeout=5) as connection:
                connection.execute(sql)
        except psycopg.Error as exc:  # no PostgreSQL here: this row says so, the others run
            raise ServerError(f"PostgreSQL at {BENCH_PG_URL}: {exc}") from None

    def start(self) -> None:
        self._admin(f'CREATE DATABASE "{self.database}"')
        super().start()

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(Exception):  # a benchmark's clean-up never hides its result
            self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


class Postfix(Server):
    name = "postfix"
    label = "Postfix"
    stores = "queue file (fsync), then Maildir via virtual(8)"

    MASTER_CF = """\
{listen} inet  n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

    def __init__(self, workdir: Path, *, relay_to: int | None = None) -> None:
        super().__init__(workdir)
        self.relay_to = relay_to
        self.root = workdir / "postfix"
        if relay_to is not None:
            self.recipient = REMOTE_RECIPIENT
            self.stores = "queue file (fsync), then SMTP to smtp-sink"

    def main_cf(self) -> str:
        return "".join(f"{key} = {value}\n" for key, value in self.settings().items())

    def settings(self) -> dict[str, object]:
        """main.cf: any user@bench.test to one Maildir, or everything to ``relay_to``."""
        import pwd

        owner = pwd.getpwnam("postfix")
        root = self.root
        settings: dict[str, object] = {
            "compatibility_level": "3.6",
            "queue_directory": root / "queue",
            "data_directory": root / "data",
            "command_directory": Path(deps.require_tool("postconf")).parent,
            "daemon_directory": deps.postfix_daemon_directory(),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": f"postfix.{LOCAL_DOMAIN}",
            "mydomain": LOCAL_DOMAIN,
            "mydestination": "",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "maillog_file": root / "maillog",
            "maillog_file_prefixes": root,
            "message_size_limit": MAX_MESSAGE_SIZE,
            "virtual_mailbox_limit": 0,
            "default_process_limit": MAX_CONNECTIONS,
            "smtpd_client_connection_count_limit": 0,
            "virtual_mailbox_domains": LOCAL_DOMAIN,
            "virtual_mailbox_base": root / "mail",
            "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
        }
        if self.relay_to is not None:
            settings["relayhost"] = f"[{LOOPBACK}]:{self.relay_to}"
        return settings

    def start(self) -> None:
        if not deps.is_root():
            raise ServerError("Postfix's master must start as root (it drops to mail_owner)")
        import pwd

        owner = pwd.getpwnam("postfix")
        for directory in (self.root / "etc", self.root / "queue"):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self.root / "data", self.root / "mail"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        # The daemons run as postfix and must reach the queue below the temp dir.
        for directory in (self.workdir, self.root):
            directory.chmod(0o755)
        for parent in self.workdir.parents:
            if not parent.stat().st_mode & 0o001:
                raise ServerError(f"{parent} must be searchable by the postfix user (o+x)")
        (self.root / "etc" / "main.cf").write_text(self.main_cf())
        master = str(deps.postfix_daemon_directory() / "master")
        etc = str(self.root / "etc")
        self._write_master_cf()
        check = subprocess.run(
            [deps.require_tool("postfix"), "-c", etc, "check"], capture_output=True, timeout=60
        )
        if check.returncode != 0:
            raise ServerError(f"'postfix -c {etc} check' failed: {postfix_says(etc)}")
        # The port may be taken between choosing and binding: try a few.
        for attempt in range(3):
            if attempt:
                self._write_master_cf()
            proc = self._spawn([master, "-c", etc, "-d"], cwd=self.root)
            try:
                wait_for_greeting(self.port, proc, START_TIMEOUT)
                return
            except ServerError:
                self.stop()
                if attempt == 2:
                    raise

    def _write_master_cf(self) -> None:
        self.port = free_port()
        listen = f"{LOOPBACK}:{self.port}"
        (self.root / "etc" / "master.cf").write_text(self.MASTER_CF.format(listen=listen))

    def delivered(self) -> int | None:
        if self.relay_to is not None:
            return None
        return count_files(self.root / "mail" / "box" / "new")


def postfix_says(etc: str) -> str:
    """Postfix logs to syslog unless stderr is a terminal: rerun under script(1) to read it."""
    script = deps.find_tool("script")
    if script is None:
        return "run it on a terminal to see why"
    command = f"{deps.require_tool('postfix')} -c {etc} check"
    out = subprocess.run(
        [script, "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60
    )
    return " ".join(out.stdout.split())[-300:] or "no message"


class Aiosmtpd(Server):
    label = "aiosmtpd"

    def __init__(self, workdir: Path, *, handler: str) -> None:
        self.handler = handler
        self.name = f"aiosmtpd-{handler}"
        self.label = f"aiosmtpd ({'no-op' if handler == 'noop' else 'fsync'} handler)"
        self.stores = "nothing" if handler == "noop" else "one file per message (fsync)"
        super().__init__(workdir)
        self.spool = workdir / "messages"

    def start(self) -> None:
        port_file = self.workdir / "port"
        script = Path(__file__).with_name("aiosmtpd_server.py")
        argv = [str(deps.venv_python()), str(script), "--handler", self.handler]
        argv += ["--port-file", str(port_file), "--directory", str(self.spool)]
        proc = self._spawn(argv)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists() or not port_file.read_text().endswith("\n"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"aiosmtpd did not start: {self.tail()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        wait_for_greeting(self.port, proc, START_TIMEOUT)

    def delivered(self) -> int | None:
        return count_files(self.spool) if self.handler == "fsync" else None


class SmtpSink(Server):
    """smtp-sink; with ``counting`` its running message counter is read from stdout."""

    name = "smtp-sink"
    label = "smtp-sink"
    stores = "nothing (throws mail away)"

    def __init__(self, workdir: Path, *, counting: bool = False) -> None:
        super().__init__(workdir)
        self.counting = counting
        self.received = 0
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        argv = [deps.require_tool("smtp-sink"), "-m", str(MAX_CONNECTIONS)]
        if deps.is_root():
            argv += ["-u", "nobody"]  # it refuses to keep root privileges
        if self.counting:
            argv.append("-c")
        for attempt in range(3):
            self.port = free_port()
            proc = self._spawn(
                [*argv, f"{LOOPBACK}:{self.port}", str(LISTEN_BACKLOG)],
                stdout=subprocess.PIPE if self.counting else None,
            )
            if self.counting:
                self._reader = threading.Thread(target=self._read_counter, daemon=True)
                self._reader.start()
            try:
                wait_for_greeting(self.port, proc, START_TIMEOUT)
                return
            except ServerError:
                self.stop()
                if attempt == 2:
                    raise

    def _read_counter(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        pattern = re.compile(rb"mesg=(\d+)")
        stream = self.proc.stdout
        tail = b""
        while chunk := stream.read1(65536):
            # Counters are records ending in CR; read only complete ones.
            complete, _, rest = (tail + chunk).rpartition(b"\r")
            tail = rest[-256:]
            found = pattern.findall(complete[-256:])
            if found:
                self.received = int(found[-1])

    def delivered(self) -> int | None:
        return self.received if self.counting else None


def alive(server: Server) -> bool:
    return server.proc is not None and server.proc.poll() is None


def cpu_seconds(server: Server) -> float:
    return procstat.cpu_seconds(server.pid)
