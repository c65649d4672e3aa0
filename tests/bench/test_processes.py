"""Process helpers of the benchmarks: pausing idle servers so that they take no CPU from a measurement."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.processes import descendants, paused, tree_cpu_s

# A parent that starts a busy child and then waits, like a server whose workers poll.
BUSY_TREE = (
    "import subprocess, sys; "
    "child = subprocess.Popen([sys.executable, '-c', 'while True: pass']); "
    "child.wait()"
)
SAMPLE_S = 0.6


@pytest.fixture
def busy_tree() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", BUSY_TREE])
    try:
        deadline = time.monotonic() + 10
        while len(descendants(process.pid)) < 2:
            assert time.monotonic() < deadline, "the busy child never started"
            time.sleep(0.05)
        yield process
    finally:
        for pid in reversed(descendants(process.pid)):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        process.wait()


def cpu_share(pid: int) -> float:
    """The tree's CPU over SAMPLE_S, in cores."""
    before = tree_cpu_s(pid)
    time.sleep(SAMPLE_S)
    after = tree_cpu_s(pid)
    assert before is not None and after is not None
    return (after - before) / SAMPLE_S


def test_a_paused_tree_takes_no_cpu_and_runs_again_afterwards(busy_tree: subprocess.Popen[bytes]) -> None:
    assert cpu_share(busy_tree.pid) > 0.3
    with paused([busy_tree.pid]):
        time.sleep(0.1)  # a tick already counted by the kernel may still land
        assert cpu_share(busy_tree.pid) < 0.05
    assert cpu_share(busy_tree.pid) > 0.3
    assert busy_tree.poll() is None


def test_a_tree_is_continued_when_the_block_raises(busy_tree: subprocess.Popen[bytes]) -> None:
    with pytest.raises(RuntimeError), paused([busy_tree.pid]):
        raise RuntimeError("measurement failed")
    assert cpu_share(busy_tree.pid) > 0.3
