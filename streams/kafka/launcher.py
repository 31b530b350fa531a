"""A single-node Apache Kafka broker (KRaft, combined broker + controller) owned by us.

The jars come from Maven Central through ``mvn`` and the pinned ``pom.xml`` next to
this file (fetched once into ``settings.kafka_cache_dir``), or from an unpacked Kafka
distribution named by ``KAFKA_HOME``. The broker listens on loopback ports of its own
and keeps its data, config, logs and a small state file in one data directory:

    DATA_DIR/server.properties   generated on every start
    DATA_DIR/data/               log.dirs (formatted once; kept across restarts)
    DATA_DIR/logs/server.log     log4j2, WARN and above
    DATA_DIR/logs/kafka.out      the JVM's stdout and stderr
    DATA_DIR/state.json          pid and ports, so ``escalation kafka down`` finds it

A broker started by this module never outlives the Python process that started it
(parent-death signal, or a watchdog process, plus ``atexit``), except with
``start(detach=True)``, which is what ``escalation kafka up --detach`` is for.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from confluent_kafka import KafkaException

from streams.errors import KafkaLauncherError
from streams.kafka.admin import admin_client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from types import TracebackType

    from streams.settings import Settings

log = logging.getLogger(__name__)

KAFKA_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_MAIN_CLASS = "kafka.tools.StorageTool"
POM_FILE = Path(__file__).with_name("pom.xml")
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.yaml")
FETCHED_MARKER = "FETCHED"
LOOPBACK = "127.0.0.1"
NODE_ID = 1
ADMIN_PRINCIPAL = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 900.0
# How often start-up checks the port; the wait wakes at once if the JVM exits.
_POLL_S = 0.05
_PORT_ATTEMPTS = 3

# Kafka's own defaults (kafka-run-class.sh) with a smaller heap: the local broker
# carries test and demo traffic on a small machine, and starts once per test session.
JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
# The storage formatter runs for a second: favour start-up over peak speed.
TOOL_JVM_OPTIONS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)


class _Unset:
    pass


_UNSET = _Unset()
_NOT_STARTED = "the local broker has not been started yet: it has no port"


# --------------------------------------------------------------------------- jars


def kafka_version(pom: Path = POM_FILE) -> str:
    """The Apache Kafka version pinned by ``pom.xml`` (its ``kafka.version`` property)."""
    text = pom.read_text(encoding="utf-8")
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if match is None:
        raise KafkaLauncherError(f"{pom}: no <kafka.version> property")
    return match.group(1)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two processes (say, two pytest sessions) may fetch at once: the second waits.
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = 6, width: int = 600) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined[-width:] if joined else "(no output)"


def fetch_jars(
    cache_dir: Path, *, pom: Path = POM_FILE, mvn: str = "mvn", timeout: float = FETCH_TIMEOUT_S
) -> Path:
    """Fetch the broker's jars once into ``cache_dir/VERSION/libs``; return that directory.

    Runs ``mvn dependency:copy-dependencies`` on a copy of ``pom.xml``; a ``FETCHED``
    marker written after success makes later calls return at once, offline.
    """
    version = kafka_version(pom)
    root = cache_dir.expanduser() / version
    libs = root / "libs"
    if (root / FETCHED_MARKER).is_file():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / ".lock"):
        if (root / FETCHED_MARKER).is_file():
            return libs
        executable = shutil.which(mvn)
        if executable is None:
            raise KafkaLauncherError(
                f"{mvn} not found on PATH: install Maven 3.8+ to fetch Apache Kafka {version}, "
                "or set KAFKA_HOME to an unpacked Apache Kafka 4 distribution"
            )
        shutil.rmtree(libs, ignore_errors=True)
        # Work on a copy: the package directory may be read-only, and Maven may write
        # next to the pom it is given.
        pom_copy = root / "pom.xml"
        shutil.copyfile(pom, pom_copy)
        command = [
            executable,
            "-q",
            "-B",
            "-f",
            str(pom_copy),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ]
        log.info("fetching Apache Kafka %s jars into %s", version, libs)
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLauncherError(
                f"mvn did not fetch Apache Kafka {version} within {timeout:g}s"
            ) from exc
        if result.returncode != 0:
            raise KafkaLauncherError(
                f"mvn could not fetch Apache Kafka {version} (exit {result.returncode}): "
                f"{_tail(result.stdout + result.stderr)}"
            )
        broker_jar = libs / f"kafka_2.13-{version}.jar"
        if not broker_jar.is_file():
            raise KafkaLauncherError(f"mvn ran but {broker_jar} is missing")
        jars = sorted(path.name for path in libs.glob("*.jar"))
        (root / FETCHED_MARKER).write_text("\n".join(jars) + "\n", encoding="utf-8")
        log.info(
            "fetched %d jars of Apache Kafka %s in %.1fs",
            len(jars),
            version,
            time.monotonic() - started,
        )
    return libs


def kafka_home_libs(kafka_home: str | Path) -> Path:
    """``KAFKA_HOME/libs``, checked to hold a Kafka broker jar."""
    libs = Path(kafka_home).expanduser() / "libs"
    if not any(libs.glob("kafka_2.1*.jar")):
        raise KafkaLauncherError(
            f"KAFKA_HOME={kafka_home}: {libs} holds no kafka_2.13-*.jar; "
            "expected an unpacked Apache Kafka distribution"
        )
    return libs


def find_java(java: str = "java") -> str:
    """The java executable: ``java`` on PATH, else ``$JAVA_HOME/bin/java``."""
    found = shutil.which(java)
    if found is None and os.environ.get("JAVA_HOME"):
        found = shutil.which(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if found is None:
        raise KafkaLauncherError(
            f"{java} not found on PATH or in JAVA_HOME: Apache Kafka 4 needs Java 17 or newer"
        )
    return found


# ---------------------------------------------------------------- configuration


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could bind ``host:port`` now (as Kafka does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_ports(
    preferred: tuple[int | None, int | None] = (None, None), host: str = LOOPBACK
) -> tuple[int, int]:
    """Two distinct free ports (broker, controller), keeping a preferred one when free."""
    chosen: list[int] = []
    for wanted in preferred:
        if wanted is not None and wanted not in chosen and port_is_free(wanted, host):
            chosen.append(wanted)
            continue
        port = free_port(host)
        while port in chosen:
            port = free_port(host)
        chosen.append(port)
    return chosen[0], chosen[1]


def server_properties(
    *,
    broker_port: int,
    controller_port: int,
    log_dirs: Path,
    host: str = LOOPBACK,
    admin_password: str | None = None,
) -> dict[str, str]:
    """The broker's configuration: one node that is both broker and KRaft controller.

    With ``admin_password`` the broker is secure (``secure_properties``).
    """
    plain = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        # A static quorum of this one node (formatted with a cluster id).
        "controller.quorum.voters": f"{NODE_ID}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
        # What clients (confluent-kafka and Faust's aiokafka) are told to connect to.
        "advertised.listeners": f"PLAINTEXT://{host}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dirs),
        # Auto-creation stays on (the default): Faust creates its internal topics.
        "auto.create.topics.enable": "true",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions than the default 50: every test uses new consumer
        # groups, and the first one waits for these partitions to be created.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Let tests use short session timeouts to see a dead consumer quickly.
        "group.min.session.timeout.ms": "500",
        # A small machine: fewer threads, and a log-cleaner buffer that fits the heap.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    if admin_password is None:
        return plain
    return {
        **plain,
        **secure_properties(
            broker_port=broker_port,
            controller_port=controller_port,
            host=host,
            admin_password=admin_password,
        ),
    }


def _jaas(module: str, **options: str) -> str:
    quoted = " ".join(f'{key}="{value}"' for key, value in options.items())
    return f"{module} required {quoted};"


def secure_properties(
    *, broker_port: int, controller_port: int, admin_password: str, host: str = LOOPBACK
) -> dict[str, str]:
    """SASL/SCRAM-SHA-512 for clients, Kafka's StandardAuthorizer, deny by default.

    Clients (and the broker itself, as the super user ``admin``) authenticate with
    SCRAM-SHA-512 on the BROKER listener; SCRAM credentials live in the cluster
    metadata (``admin``'s is written by ``kafka-storage format --add-scram``, the
    principals' by the Admin API). The KRaft controller listener cannot use SCRAM
    (the controller must authenticate before it has read the metadata), so it uses
    SASL/PLAIN with the one ``admin`` user held in this file (mode 0600).
    """
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    return {
        "listeners": f"BROKER://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"BROKER://{host}:{broker_port}",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,BROKER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "BROKER",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.broker.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.broker.scram-sha-512.sasl.jaas.config": _jaas(
            scram, username=ADMIN_PRINCIPAL, password=admin_password
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            plain,
            username=ADMIN_PRINCIPAL,
            password=admin_password,
            **{f"user_{ADMIN_PRINCIPAL}": admin_password},
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
        # Topics are created by the gate with their configs, never by a stray client.
        "auto.create.topics.enable": "false",
    }


def render_properties(properties: dict[str, str]) -> str:
    """Java ``.properties`` text (one ``key=value`` a line)."""
    lines = ["# Generated by streams/kafka/launcher.py on every start; edits are lost."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """The inverse of ``render_properties`` (enough for the files we write)."""
    parsed: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        parsed[key.strip()] = value.strip().replace(chr(92) * 2, chr(92))
    return parsed


def new_cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints one."""
    while True:
        # Kafka's Uuid.randomUuid() also avoids a leading '-' (it reads as an option).
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


# ------------------------------------------------------------------ state file


@dataclass(frozen=True)
class BrokerState:
    """What ``state.json`` records about a local broker: where it is and who runs it."""

    port: int
    controller_port: int
    data_dir: Path
    pid: int | None = None
    kafka_version: str = ""
    started_at: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["data_dir"] = str(self.data_dir)
        fields["bootstrap_servers"] = self.bootstrap_servers
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> BrokerState:
        try:
            raw = json.loads(text)
            pid = raw.get("pid")
            return cls(
                port=int(raw["port"]),
                controller_port=int(raw["controller_port"]),
                data_dir=Path(raw["data_dir"]),
                pid=None if pid is None else int(pid),
                kafka_version=str(raw.get("kafka_version", "")),
                started_at=raw.get("started_at"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KafkaLauncherError(f"broker state is unreadable: {exc!r}") from exc


def write_state(path: Path, state: BrokerState) -> None:
    """Write ``state`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(state.to_json(), encoding="utf-8")
    temporary.replace(path)


def read_state(path: Path) -> BrokerState | None:
    """The state in ``path``, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KafkaLauncherError(f"{path}: {exc.strerror}") from exc
    try:
        return BrokerState.from_json(text)
    except KafkaLauncherError as exc:
        raise KafkaLauncherError(f"{path}: {exc}") from exc


# ------------------------------------------------------------------- processes


def _process_args(pid: int) -> list[str] | None:
    """The command line of a live (not zombie) process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        if stat.rpartition(")")[2].split()[0] == "Z":
            return None
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    except OSError:
        # No /proc (not Linux): all we can tell is whether the pid exists.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return []
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_broker_process(pid: int, config_file: Path) -> bool:
    """Whether ``pid`` is a live Kafka broker started with ``config_file``."""
    args = _process_args(pid)
    if args is None:
        return False
    if not args:  # cannot see the command line: trust the pid
        return True
    return KAFKA_MAIN_CLASS in args and str(config_file) in args


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` (not our child) has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)
    try:
        while _process_args(pid) is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                # Readable when the process exits: wakes at once, no polling.
                select.select([pidfd], [], [], remaining)
            else:
                select.select([], [], [], min(_POLL_S, remaining))
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def terminate_pid(pid: int, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout``, then SIGKILL; True if it stopped cleanly."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if _wait_for_exit(pid, timeout):
        return True
    log.warning("pid %d did not stop within %gs of SIGTERM: sending SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_for_exit(pid, 10.0)
    return False


_PR_SET_PDEATHSIG = 1


def parent_death_signal_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when we die.

    Linux only (prctl PR_SET_PDEATHSIG); None elsewhere. The signal follows the
    *thread* that forks, so only use it from a thread that lives as long as the
    process (the main thread); ``spawn`` uses a watchdog process otherwise.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before fork: the child only makes the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # we died between fork and prctl
            os.kill(os.getpid(), sig)

    return preexec


# Runs in its own interpreter: exits when the child exits, or kills the child when our
# end of its stdin closes (we exited, however we died). pidfd: no pid-reuse mistakes.
WATCHDOG_SOURCE = """
import os, select, signal, sys
pidfd = os.pidfd_open(int(sys.argv[1]))
ready, _, _ = select.select([sys.stdin, pidfd], [], [])
if pidfd not in ready:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


@dataclass
class Spawned:
    """A child process and, when one guards it, its watchdog."""

    process: subprocess.Popen[bytes]
    watchdog: subprocess.Popen[bytes] | None = None

    def release_watchdog(self) -> None:
        """Let the watchdog go (after the child has exited or when detaching)."""
        watchdog, self.watchdog = self.watchdog, None
        if watchdog is None:
            return
        if self.process.poll() is None:
            # Detaching: kill the watchdog first, or closing its stdin kills the child.
            watchdog.kill()
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


def spawn(
    argv: Sequence[str],
    *,
    die_with_parent: bool,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Spawned:
    """Start ``argv`` in a session of its own (Ctrl-C in our terminal does not reach it).

    ``die_with_parent``: the child is SIGKILLed when this process dies, however it dies.
    """
    preexec = None
    use_watchdog = False
    if die_with_parent:
        if threading.current_thread() is threading.main_thread():
            preexec = parent_death_signal_preexec()
        use_watchdog = preexec is None and hasattr(os, "pidfd_open")
        if preexec is None and not use_watchdog:
            log.warning("no parent-death signal on %s: only atexit stops the child", sys.platform)
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
        # Safe with threads here: the child only calls prctl, looked up before fork.
        preexec_fn=preexec,  # noqa: PLW1509
    )
    spawned = Spawned(process)
    if use_watchdog:
        spawned.watchdog = subprocess.Popen(
            [sys.executable, "-I", "-c", WATCHDOG_SOURCE, str(process.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    return spawned


# ------------------------------------------------------------------ the broker

_LIVE: set[LocalKafka] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for kafka in live:
        with contextlib.suppress(Exception):
            kafka.stop(timeout=10.0)


atexit.register(_stop_all_at_exit)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class LocalKafka:
    """One local Apache Kafka broker (KRaft, broker + controller in one JVM).

    ``with LocalKafka(data_dir, cache_dir=...) as kafka: kafka.bootstrap_servers``.
    ``stop()`` / ``start()`` / ``restart()`` keep the ports and the data, so clients
    reconnect to the same address.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        cache_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        kafka_home: str | Path | _Unset | None = _UNSET,
        java: str = "java",
        jvm_options: Sequence[str] = JVM_OPTIONS,
        start_timeout: float = START_TIMEOUT_S,
        stop_timeout: float = STOP_TIMEOUT_S,
        secure: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        # SASL/SCRAM and ACLs (secure_properties); principals are provisioned by
        # streams.kafka.acls.provision once the broker answers.
        self.secure = secure
        self.cache_dir = Path(cache_dir).expanduser()
        if isinstance(kafka_home, _Unset):
            kafka_home = os.environ.get("KAFKA_HOME") or None
        self.kafka_home = kafka_home
        self.java = java
        self.jvm_options = tuple(jvm_options)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        # Ports given here are required; preferred ones (a previous run's) are a wish.
        self._fixed_ports = port is not None or controller_port is not None
        self._port = port
        self._controller_port = controller_port
        self._preferred: tuple[int | None, int | None] = (port, controller_port)
        self._spawned: Spawned | None = None
        self._detached_pid: int | None = None
        self._out: IO[bytes] | None = None
        self._lock = threading.RLock()
        self.last_start_seconds: float | None = None
        self.last_format_seconds: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LocalKafka:
        """The project's broker: data in ``settings.data_dir / "kafka"``.

        Prefers the ports of the previous run in that directory, so an exported
        ``KAFKA_BOOTSTRAP_SERVERS`` keeps working after ``down`` and ``up``.
        """
        kafka = cls(settings.data_dir / "kafka", cache_dir=settings.kafka_cache_dir, **kwargs)
        if not kafka._fixed_ports:
            with contextlib.suppress(KafkaLauncherError):
                previous = read_state(kafka.state_file)
                if previous is not None:
                    kafka._preferred = (previous.port, previous.controller_port)
        return kafka

    # ---------------------------------------------------------------- paths

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / "kafka.out"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def principals_dir(self) -> Path:
        """Client properties files (mode 0600), one per principal, of a secure broker."""
        return self.data_dir / "principals"

    def credentials_file(self, principal: str) -> Path:
        """The client properties file of ``principal`` (librdkafka names)."""
        return self.principals_dir / f"{principal}.properties"

    def client_config(self, principal: str = ADMIN_PRINCIPAL) -> dict[str, str]:
        """librdkafka security properties of ``principal``; empty for a plain broker."""
        if not self.secure:
            return {}
        from streams.kafka.security import read_client_properties  # noqa: PLC0415

        return read_client_properties(self.credentials_file(principal))

    def _admin_password(self) -> str:
        """The super user's password: made once, kept in ``principals/admin.properties``."""
        from streams.kafka.security import (  # noqa: PLC0415
            read_client_properties,
            write_client_properties,
        )

        path = self.credentials_file(ADMIN_PRINCIPAL)
        formatted = (self.log_dirs / "meta.properties").is_file()
        if not path.exists():
            if formatted:
                raise KafkaLauncherError(
                    f"{self.data_dir} was formatted without security: --secure needs a "
                    "fresh data directory (its SCRAM credentials are written when formatting)"
                )
            write_client_properties(
                path,
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": SCRAM_MECHANISM,
                    "sasl.username": ADMIN_PRINCIPAL,
                    "sasl.password": secrets.token_urlsafe(24),
                },
            )
        return read_client_properties(path)["sasl.password"]

    # ---------------------------------------------------------------- state

    @property
    def port(self) -> int:
        if self._port is None:
            raise KafkaLauncherError(_NOT_STARTED)
        return self._port

    @property
    def controller_port(self) -> int:
        if self._controller_port is None:
            raise KafkaLauncherError(_NOT_STARTED)
        return self._controller_port

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, the value for ``KAFKA_BOOTSTRAP_SERVERS``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        if self._spawned is not None:
            return self._spawned.process.pid
        return self._detached_pid

    @property
    def running(self) -> bool:
        if self._spawned is not None:
            return self._spawned.process.poll() is None
        if self._detached_pid is not None:
            return is_broker_process(self._detached_pid, self.config_file)
        return False

    def running_elsewhere(self) -> BrokerState | None:
        """The state of a broker another process runs in this data dir, if one does."""
        state = read_state(self.state_file)
        if state is None or state.pid is None or state.pid == self.pid:
            return None
        return state if is_broker_process(state.pid, self.config_file) else None

    # ---------------------------------------------------------------- start

    def classpath(self) -> str:
        """``LIBS/*`` of KAFKA_HOME, or of the fetched jars (fetching them if needed)."""
        if self.kafka_home:
            return str(kafka_home_libs(self.kafka_home) / "*")
        return str(fetch_jars(self.cache_dir) / "*")

    def version(self) -> str:
        if self.kafka_home:
            jars = sorted(kafka_home_libs(self.kafka_home).glob("kafka_2.1*-*.jar"))
            names = [jar.stem.partition("-")[2] for jar in jars]
            return next((name for name in names if name[:1].isdigit()), "unknown")
        return kafka_version()

    def _system_properties(self) -> list[str]:
        return [
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        ]

    def start(self, *, detach: bool = False) -> Self:
        """Start the broker and wait until it answers a metadata request.

        ``detach``: the broker outlives this process (``escalation kafka up --detach``);
        stop it with ``stop()``, ``stop_detached(data_dir)`` or ``escalation kafka down``.
        """
        with self._lock:
            if self.running:
                return self
            other = None
            with contextlib.suppress(KafkaLauncherError):  # unreadable: overwritten below
                other = self.running_elsewhere()
            if other is not None:
                raise KafkaLauncherError(
                    f"a local broker already runs in {self.data_dir} (pid {other.pid}, "
                    f"{other.bootstrap_servers}): use it, or stop it with `escalation kafka down`"
                )
            if not self.secure and self.credentials_file(ADMIN_PRINCIPAL).exists():
                raise KafkaLauncherError(
                    f"{self.data_dir} holds a secure broker (ACLs, SCRAM principals): "
                    "start it with --secure, or use another data directory"
                )
            java = find_java(self.java)
            classpath = self.classpath()
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self.log_dirs.mkdir(parents=True, exist_ok=True)
            attempts = 1 if self._fixed_ports else _PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                if self._port is None or self._controller_port is None:
                    broker, controller = pick_ports(self._preferred)
                    # A port asked for is kept even if taken: Kafka then says so.
                    self._port = self._port or broker
                    self._controller_port = self._controller_port or controller
                self._write_config()
                self._format(java, classpath)
                try:
                    self._launch(java, classpath, detach=detach)
                    break
                except _PortTakenError as exc:
                    if attempt == attempts:
                        raise KafkaLauncherError(str(exc)) from exc
                    log.info("%s; trying other ports", exc)
                    self._port = self._controller_port = None
                    self._preferred = (None, None)
            write_state(self.state_file, self._state(pid=self.pid))
            if not detach:
                with _LIVE_LOCK:
                    _LIVE.add(self)
            return self

    def _state(self, *, pid: int | None) -> BrokerState:
        return BrokerState(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            pid=pid,
            kafka_version=self.version(),
            started_at=_utc_now() if pid is not None else None,
        )

    def _write_config(self) -> None:
        properties = server_properties(
            broker_port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dirs,
            admin_password=self._admin_password() if self.secure else None,
        )
        # A secure broker's config holds the super user's password: owner only.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_properties(properties))
        self.config_file.chmod(0o600)

    def _format(self, java: str, classpath: str) -> None:
        if (self.log_dirs / "meta.properties").is_file():
            return  # formatted by an earlier start: keep the data
        command = [
            java,
            *TOOL_JVM_OPTIONS,
            *self._system_properties(),
            "-cp",
            classpath,
            STORAGE_TOOL_MAIN_CLASS,
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.config_file),
            "--ignore-formatted",
        ]
        if self.secure:
            # The super user's SCRAM credential, in the metadata from the first record.
            password = self._admin_password()
            command += [
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={ADMIN_PRINCIPAL},password={password}]",
            ]
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLauncherError(
                f"formatting {self.log_dirs} took longer than {FORMAT_TIMEOUT_S:g}s"
            ) from exc
        if result.returncode != 0:
            raise KafkaLauncherError(
                f"{STORAGE_TOOL_MAIN_CLASS} format failed (exit {result.returncode}): "
                f"{_tail(result.stdout + result.stderr)}"
            )
        self.last_format_seconds = time.monotonic() - started

    def _launch(self, java: str, classpath: str, *, detach: bool) -> None:
        command = [
            java,
            *self.jvm_options,
            *self._system_properties(),
            "-cp",
            classpath,
            KAFKA_MAIN_CLASS,
            str(self.config_file),
        ]
        out = self.stdout_log.open("ab")
        out.write(f"--- {_utc_now()} starting: {' '.join(command)}\n".encode())
        out.flush()
        out_offset = out.tell()
        server_log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
        started = time.monotonic()
        spawned = spawn(command, die_with_parent=not detach, stdout=out, cwd=self.data_dir)
        self._spawned, self._out = spawned, out
        try:
            self._wait_until_ready(started + self.start_timeout, out_offset, server_log_offset)
        except BaseException:
            self._kill()
            raise
        self.last_start_seconds = time.monotonic() - started
        log.info(
            "Apache Kafka %s up at %s in %.1fs (pid %d, data %s)",
            self.version(),
            self.bootstrap_servers,
            self.last_start_seconds,
            spawned.process.pid,
            self.data_dir,
        )
        if detach:
            # Forget the child: it must outlive us, and nothing here should reap it.
            spawned.release_watchdog()
            self._detached_pid = spawned.process.pid
            spawned.process.returncode = 0  # keeps Popen.__del__ quiet about it
            self._spawned = None
            out.close()
            self._out = None

    def _new_output(self, out_offset: int, server_log_offset: int) -> str:
        text = ""
        for path, offset in ((self.stdout_log, out_offset), (self.server_log, server_log_offset)):
            with contextlib.suppress(OSError), path.open("rb") as handle:
                handle.seek(offset)
                text += handle.read().decode(errors="replace")
        return text

    def _wait_until_ready(self, deadline: float, out_offset: int, server_log_offset: int) -> None:
        assert self._spawned is not None  # noqa: S101 - set by the caller
        process = self._spawned.process
        admin = None
        while True:
            code = process.poll()
            if code is not None:
                output = self._new_output(out_offset, server_log_offset)
                if "Address already in use" in output:
                    raise _PortTakenError(
                        f"port {self.port} or {self.controller_port} is taken: {_tail(output, 2)}"
                    )
                raise KafkaLauncherError(
                    f"the broker exited with code {code} during start-up "
                    f"(logs in {self.logs_dir}): {_tail(output)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaLauncherError(
                    f"the broker did not answer on {self.bootstrap_servers} within "
                    f"{self.start_timeout:g}s (logs in {self.logs_dir})"
                )
            if _accepts_connections(self.port):
                if admin is None:
                    admin = admin_client(self.bootstrap_servers, **self.client_config())
                try:
                    metadata = admin.list_topics(timeout=min(2.0, remaining))
                except KafkaException:
                    metadata = None
                if metadata is not None and metadata.brokers:
                    return
            # The tick between checks; returns at once if the JVM exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(_POLL_S, max(remaining, 0.001)))

    # ---------------------------------------------------------------- stop

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the broker, wait up to ``timeout``, then SIGKILL; keep ports and data.

        Returns the JVM's exit code (143 after a clean SIGTERM shutdown), or None if
        it was not running or was detached (not our child).
        """
        wait = self.stop_timeout if timeout is None else timeout
        with self._lock:
            code: int | None = None
            if self._spawned is not None:
                process = self._spawned.process
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=wait)
                    except subprocess.TimeoutExpired:
                        log.warning("broker pid %d ignored SIGTERM for %gs", process.pid, wait)
                        process.kill()
                        process.wait(timeout=10.0)
                code = process.returncode
                self._spawned.release_watchdog()
                self._spawned = None
            elif self._detached_pid is not None:
                if is_broker_process(self._detached_pid, self.config_file):
                    terminate_pid(self._detached_pid, timeout=wait)
                self._detached_pid = None
            else:
                return None
            if self._out is not None:
                self._out.close()
                self._out = None
            with _LIVE_LOCK:
                _LIVE.discard(self)
            if self._port is not None and self._controller_port is not None:
                with contextlib.suppress(OSError):
                    write_state(self.state_file, self._state(pid=None))
            return code

    def _kill(self) -> None:
        if self._spawned is not None:
            process = self._spawned.process
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10.0)
            self._spawned.release_watchdog()
            self._spawned = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self) -> Self:
        """Stop and start again on the same ports, with the same data."""
        with self._lock:
            self.stop()
            return self.start()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker exits (or ``timeout``); its exit code, or None."""
        spawned = self._spawned
        if spawned is None:
            return None
        try:
            return spawned.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        return f"<LocalKafka {LOOPBACK}:{port} pid={self.pid} data_dir={self.data_dir}>"


class _PortTakenError(Exception):
    pass


def _accepts_connections(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def running_broker(data_dir: Path) -> BrokerState | None:
    """The state of the broker running in ``data_dir`` (any process's), or None."""
    state = read_state(Path(data_dir) / "state.json")
    if state is None or state.pid is None:
        return None
    if not is_broker_process(state.pid, Path(data_dir).absolute() / "server.properties"):
        return None
    return state


def stop_detached(data_dir: Path, *, timeout: float = STOP_TIMEOUT_S) -> BrokerState | None:
    """Stop the broker running in ``data_dir``; its state, or None if none ran."""
    directory = Path(data_dir).expanduser().absolute()
    state = running_broker(directory)
    if state is None or state.pid is None:
        return None
    terminate_pid(state.pid, timeout=timeout)
    stopped = dataclasses.replace(state, pid=None, started_at=None)
    write_state(directory / "state.json", stopped)
    return stopped
