"""A Ray cluster with no shared disk, on one machine: a head and two worker nodes, each worker
node in a mount namespace of its own with a private tmpfs over this test session's folders, so
it cannot see the driver's scratch, its inputs or its outputs. Everything goes through an S3
endpoint (moto's server), as on a cloud cluster without NFS.

prepare -> tokenize -> packing run on it and must write the bytes of a one-machine local run;
then the same after each fault: a busy prepare actor and a busy tokenize actor killed with
SIGKILL, a whole worker node killed (and replaced, as an autoscaler would), and the driver
killed and started again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import S3Server, local_files, store_files, upload_folder, write_text_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.ray]
pytest.importorskip("ray")
pytest.importorskip("s3fs")

if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True).returncode != 0:
    pytest.skip("needs `unshare --mount` (root or user namespaces) for private node disks",
                allow_module_level=True)

SELECTION = ["--samples_per_dialect", "2", "--max_samples_per_speaker", "1",
             "--rows_per_shard", "1"]
TOKENIZE = ["--device", "cpu", "--no_dedupe_frames", "--pack_length", "256",
            "--configs", "central", "balear", "valencia"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _pids_in(namespace: str) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()
            and int(entry) != os.getpid() and _namespace(int(entry)) == namespace]


@dataclass
class RayCluster:
    """Head (no CPUs: no task runs beside the driver) plus worker nodes with private disks."""

    env: dict[str, str]
    hidden: list[str]  # the folders each worker node sees as an empty tmpfs
    port: int = field(default_factory=_free_port)
    nodes: list[subprocess.Popen] = field(default_factory=list)
    # Ray's own folder, of this cluster only: the machine's /tmp/ray/ray_current_cluster must
    # not name it, or every later ray.init() of the session would try to join it
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="pr-", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_head(self) -> None:
        self.head = self._start(f"exec ray start --head --num-cpus=0 --port={self.port} "
                                "--node-ip-address=127.0.0.1 --include-dashboard=false "
                                f"--disable-usage-stats --temp-dir={self.temp_dir} --block")
        self.wait_for_cpus(0)

    def add_node(self) -> subprocess.Popen:
        masks = " && ".join(f"mount -t tmpfs tmpfs {folder}" for folder in self.hidden)
        node = self._start(f"{masks} && exec ray start --address={self.address} --num-cpus=1 "
                           f"--node-ip-address=127.0.0.1 --temp-dir={self.temp_dir} --block")
        self.nodes.append(node)
        self.wait_for_cpus(len(self.nodes))
        return node

    def _start(self, script: str) -> subprocess.Popen:
        # each node in its own mount namespace: its processes are found (and killed) by it
        return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 script], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for_cpus(self, cpus: int, timeout: float = 120) -> None:
        probe = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(int(ray.cluster_resources().get('CPU', 0)))")
        deadline = time.monotonic() + timeout
        while True:
            answer = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env,
                                    capture_output=True, text=True)
            if answer.returncode == 0 and answer.stdout.strip() == str(cpus):
                return
            assert time.monotonic() < deadline, f"cluster not up: {answer.stderr[-500:]}"
            time.sleep(1)

    def kill_node(self, node: subprocess.Popen) -> None:
        """Every process of the node at once (raylet, object store, workers): a lost machine."""
        _kill_namespace_of(node)
        self.nodes.remove(node)

    def worker_pids(self, title: str) -> list[int]:
        """Processes on the worker nodes whose title starts with ``title`` (Ray names an
        actor's process ``ray::<class>.<method>`` while the method runs)."""
        found = []
        for node in self.nodes:
            namespace = _namespace(node.pid)
            for pid in _pids_in(namespace) if namespace else []:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        if handle.read().decode(errors="replace").startswith(title):
                            found.append(pid)
                except OSError:
                    pass
        return found

    def stop(self) -> None:
        for node in [*self.nodes, self.head]:
            _kill_namespace_of(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill_namespace_of(node: subprocess.Popen) -> None:
    """SIGKILL every process in ``node``'s mount namespace, then reap the node."""
    namespace = _namespace(node.pid)
    for pid in _pids_in(namespace) if namespace else []:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait()


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, str]]:
    """The models, outside the hidden folders: installed on every node, as on a real cluster."""
    pytest.importorskip("snac")
    from parla.testing import write_random_snac

    folder = Path(tempfile.mkdtemp(prefix="parla-cluster-models-"))
    snac = write_random_snac(folder / "snac")
    tokenizer = write_text_tokenizer(folder / "tokenizer.json", add_bos=True)
    yield {"snac_model": str(snac), "text_tokenizer": str(tokenizer)}
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(_moto_server, tmp_path_factory) -> Iterator[RayCluster]:
    hidden = [str(tmp_path_factory.getbasetemp())]  # every test's tmp_path, scratch, output
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=_moto_server,
               PARLA_DISABLE_PROGRESS="1", OMP_NUM_THREADS="1",
               # a lost node is noticed in seconds, not Ray's default half minute
               RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="1000",
               RAY_health_check_failure_threshold="3")
    ray_cluster = RayCluster(env, hidden)
    ray_cluster.start_head()
    try:
        ray_cluster.add_node()
        ray_cluster.add_node()
        yield ray_cluster
    finally:
        ray_cluster.stop()


@dataclass
class ClusterRun:
    cluster: RayCluster
    s3: object
    models: dict[str, str]
    source: str

    def command(self, stage: str, out: str) -> list[str]:
        options = ["--storage_options", json.dumps(self.s3.storage_options)]
        if stage == "prepare":
            return ["prepare", "--datasets", self.source, "--output_dir", out, *SELECTION,
                    *options]
        models = ["--snac_model", self.models["snac_model"], "--text_tokenizer",
                  self.models["text_tokenizer"]]
        return ["tokenize", "--input_dir", out.replace("/tokenized", "/prepared"),
                "--output_dir", out, *TOKENIZE, *models, *options]

    def start(self, stage: str, out: str, *extra: str) -> subprocess.Popen:
        """The driver: `parla <stage> --engine ray` in a process of its own, on the head."""
        env = dict(self.cluster.env, RAY_ADDRESS=self.cluster.address)
        return subprocess.Popen([sys.executable, "-m", "parla", *self.command(stage, out),
                                 "--engine", "ray", *extra], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def run(self, stage: str, out: str, *extra: str, timeout: float = 300) -> None:
        driver = self.start(stage, out, *extra)
        _, error = driver.communicate(timeout=timeout)
        assert driver.returncode == 0, error[-2000:]

    def wait_for_shards(self, prefix: str, driver: subprocess.Popen, count: int = 1) -> None:
        deadline = time.monotonic() + 180
        while len([k for k in self.s3.keys(prefix) if k.endswith(".parquet")]) < count:
            assert driver.poll() is None, driver.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.fixture(scope="module")
def source(_moto_server) -> str:
    """The demo release on the store, read by every run (a shard's record names its source)."""
    return upload_folder(_fresh_bucket(_moto_server), _demo(), "cv/cv_ca_demo")


@pytest.fixture(scope="module")
def reference(_moto_server, source, models, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """A one-machine local run of the same source: the bytes every cluster run must write."""
    out = tmp_path_factory.mktemp("local-reference")
    options = ["--storage_options", json.dumps({"endpoint_url": _moto_server})]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", PARLA_DISABLE_PROGRESS="1", OMP_NUM_THREADS="1")
    prepare = ["prepare", "--datasets", source, "--output_dir", str(out / "prepared"),
               *SELECTION, *options]
    tokenize = ["tokenize", "--input_dir", str(out / "prepared"), "--output_dir",
                str(out / "tokenized"), *TOKENIZE, "--snac_model", models["snac_model"],
                "--text_tokenizer", models["text_tokenizer"]]
    for command in (prepare, tokenize):
        done = subprocess.run([sys.executable, "-m", "parla", *command], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return {stage: local_files(out / stage) for stage in ("prepared", "tokenized")}


def _demo() -> Path:
    from parla.demo import demo_corpus_path

    return demo_corpus_path()


def _fresh_bucket(endpoint: str):
    import uuid

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = S3Server(endpoint, f"parla-{uuid.uuid4().hex[:10]}")
    server.client().create_bucket(Bucket=server.bucket)
    return server


@pytest.fixture
def on_cluster(cluster, _moto_server, models, source) -> ClusterRun:
    """A run on the cluster into a bucket of its own."""
    return ClusterRun(cluster, _fresh_bucket(_moto_server), models, source)


def _same_as(run: ClusterRun, reference: dict[str, dict[str, bytes]], *stages: str) -> None:
    for stage in stages:
        assert store_files(run.s3, stage) == reference[stage], stage


def test_the_worker_nodes_cannot_see_the_driver_disk(cluster, tmp_path):
    (tmp_path / "driver-only").write_text("x")
    probe = ("import ray, os, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "f = ray.remote(num_cpus=1)(lambda p: os.path.exists(p)); "
             "print(ray.get([f.remote(sys.argv[2]) for _ in range(4)]))")
    seen = subprocess.run([sys.executable, "-c", probe, cluster.address,
                           str(tmp_path / "driver-only")], env=cluster.env, capture_output=True,
                          text=True)
    assert seen.stdout.strip() == "[False, False, False, False]", seen.stderr[-1000:]


def test_prepare_tokenize_and_packing_on_the_cluster_write_the_local_bytes(on_cluster,
                                                                           reference):
    on_cluster.run("prepare", f"{on_cluster.s3.url}/prepared")
    on_cluster.run("tokenize", f"{on_cluster.s3.url}/tokenized")
    _same_as(on_cluster, reference, "prepared", "tokenized")
    assert any(name.startswith("data/packed/") for name in reference["tokenized"])


def _kill_busy_actor(cluster: RayCluster) -> Callable[[], None]:
    def kill() -> None:
        deadline = time.monotonic() + 60
        while not (busy := cluster.worker_pids("ray::_TaskRunner.run")):
            assert time.monotonic() < deadline, "no busy actor to kill"
            time.sleep(0.02)
        os.kill(busy[0], signal.SIGKILL)
    return kill


@pytest.mark.parametrize("stage", ["prepare", "tokenize"])
def test_a_busy_actor_killed_with_sigkill_is_survived(on_cluster, reference, stage):
    url = on_cluster.s3.url
    if stage == "tokenize":
        on_cluster.run("prepare", f"{url}/prepared")
    out = f"{url}/{'prepared' if stage == 'prepare' else 'tokenized'}"
    driver = on_cluster.start(stage, out)
    if stage == "prepare":  # tokenize hands each worker all its shards in one call: no wait
        on_cluster.wait_for_shards(out.removeprefix(url + "/") + "/data/", driver)
    _kill_busy_actor(on_cluster.cluster)()
    _, error = driver.communicate(timeout=300)
    assert driver.returncode == 0, error[-2000:]
    _same_as(on_cluster, reference, "prepared", *(["tokenized"] if stage == "tokenize" else []))


def test_a_lost_worker_node_is_survived(on_cluster, reference):
    cluster, url = on_cluster.cluster, on_cluster.s3.url
    driver = on_cluster.start("prepare", f"{url}/prepared")
    on_cluster.wait_for_shards("prepared/data/", driver)
    cluster.kill_node(cluster.nodes[0])
    cluster.add_node()  # the autoscaler's replacement
    _, error = driver.communicate(timeout=300)
    assert driver.returncode == 0, error[-2000:]
    _same_as(on_cluster, reference, "prepared")


def test_a_driver_killed_and_started_again_finishes_the_same_output(on_cluster, reference):
    url = on_cluster.s3.url
    driver = on_cluster.start("prepare", f"{url}/prepared")
    on_cluster.wait_for_shards("prepared/data/", driver, count=2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    # its lock is left behind (a lease of minutes): the restarted driver takes it over
    on_cluster.run("prepare", f"{url}/prepared", "--break_lock")
    _same_as(on_cluster, reference, "prepared")
