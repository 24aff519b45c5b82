"""The lock a stage holds on its output: flock on a disk, a conditional-create object on a store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parla.errors import EnvironmentFailure, UsageError
from parla.store.lock import LOCK_FILE, RemoteLock, lock_folder
from parla.store.urls import as_path

HOLD = """
import sys, time
from parla.store.lock import lock_folder
with lock_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "out")
    try:
        with pytest.raises(UsageError, match=f"in use by another parla run \\(pid {holder.pid} "):
            with lock_folder(tmp_path / "out"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_does_not_block(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "out")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "out" / LOCK_FILE).exists()  # the file stays; the lock went with it
    with lock_folder(tmp_path / "out"):
        assert f"pid {os.getpid()}" in (tmp_path / "out" / LOCK_FILE).read_text()
    with lock_folder(tmp_path / "out"):
        pass


def test_a_second_run_into_a_store_url_is_refused(memory_store) -> None:
    with lock_folder(f"{memory_store}/out"):
        with pytest.raises(UsageError, match="in use by another parla run .*--break_lock"):
            with lock_folder(f"{memory_store}/out"):
                pass
    with lock_folder(f"{memory_store}/out"):  # released at the end
        pass
    assert not (as_path(f"{memory_store}/out") / LOCK_FILE).exists()


def test_a_stale_store_lock_is_taken_over_and_a_live_one_only_with_break_lock(
        memory_store) -> None:
    folder = as_path(f"{memory_store}/out")
    crashed = RemoteLock(folder, lease_seconds=0.2)
    assert crashed.create()  # a run that died without releasing it
    with pytest.raises(UsageError, match="in use"):
        with lock_folder(folder):
            pass
    time.sleep(0.3)
    with lock_folder(folder):  # expired: taken over
        assert not crashed.renew()  # the dead run, were it alive, would learn it lost the lock
    live = RemoteLock(folder, lease_seconds=600)
    assert live.create()
    with lock_folder(folder, break_lock=True):
        assert (folder / LOCK_FILE).exists()
    assert not (folder / LOCK_FILE).exists()


def test_the_running_driver_renews_its_store_lock(memory_store) -> None:
    folder = as_path(f"{memory_store}/out")
    with lock_folder(folder, lease_seconds=0.3):
        first = RemoteLock(folder, 1).holder()["expires"]
        time.sleep(0.5)
        assert RemoteLock(folder, 1).holder()["expires"] > first


def test_a_run_whose_store_lock_was_taken_over_ends_with_one_error(memory_store) -> None:
    folder = as_path(f"{memory_store}/out")
    with pytest.raises(EnvironmentFailure, match="taken over by another run"):
        with lock_folder(folder, lease_seconds=0.3):
            other = RemoteLock(folder, 60)
            assert other.replace(other.read()[1])  # another run's --break_lock
            time.sleep(0.5)  # the next renewal finds the other run's token
    assert RemoteLock(folder, 1).holder()["token"] == other.token  # its lock is left alone
