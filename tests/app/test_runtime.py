"""The runtime's process-wide TensorFlow settings: bfloat16 on CPUs that have it, float32 elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import config, main
from app.main import create_app
from app.serving import runtime
from app.serving.runtime import DeviceInfo, cpu_has_bfloat16
from tests.conftest import make_settings, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
# Runs in a fresh interpreter: TensorFlow's graph options are global to a process and would leak into other tests.
PROBE = """
import json, sys
from pathlib import Path
import numpy as np
import app.serving.runtime as runtime
import app.image.runtime as image_runtime
from genserve import store
from genserve.conventions import latents_from_seeds

store_path, cpuinfo, bfloat16, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
runtime._CPUINFO = cpuinfo
device = runtime.configure_devices(cpu_bfloat16=bfloat16)
import tensorflow as tf
name = store.list_models(store_path)[0]
version = store.version_dir(store_path, name, store.latest_version(store_path, name))
model = image_runtime.ImageRuntime(version, device)
images = model.generate({store.LATENT_INPUT: latents_from_seeds(list(range(16)), model.metadata.latent_dim)})
np.save(out, images)
option = tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16", False)
print(json.dumps({"bfloat16": bool(option)}))
"""
FLAGS = "flags\t\t: fpu sse2 avx2 avx512f {extra}\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("processor\t: 0\n" + FLAGS.format(extra="avx512_bf16 avx512_vnni"), True),
        (FLAGS.format(extra="amx_bf16 amx_tile"), True),
        (FLAGS.format(extra="avx512_vnni"), False),
        ("processor\t: 0\nmodel name\t: something\n", False),
    ],
    ids=["avx512-bf16", "amx-bf16", "no-bf16", "no-flags"],
)
def test_bfloat16_instructions_are_read_from_cpuinfo(cpuinfo: str, expected: bool) -> None:
    assert cpu_has_bfloat16(cpuinfo) is expected


def generate(store: Path, tmp_path: Path, flags: str, bfloat16: bool) -> tuple[np.ndarray, bool, str]:
    cpuinfo = tmp_path / f"cpuinfo-{flags}-{bfloat16}"
    cpuinfo.write_text(FLAGS.format(extra=flags))
    out = tmp_path / f"images-{flags}-{bfloat16}.npy"
    command = [sys.executable, "-c", PROBE, str(store), str(cpuinfo), "1" if bfloat16 else "0", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(out), json.loads(done.stdout.strip().splitlines()[-1])["bfloat16"], done.stderr


def test_bfloat16_runs_the_model_within_a_few_pixel_levels_of_float32(
    tiny_store: Path, tmp_path: Path
) -> None:
    reference, reference_bf16, _ = generate(tiny_store, tmp_path, "avx512_bf16", bfloat16=False)
    images, applied, _ = generate(tiny_store, tmp_path, "avx512_bf16", bfloat16=True)
    assert (reference_bf16, applied) == (False, True)
    assert images.shape == reference.shape and images.dtype == np.uint8
    assert np.abs(images.astype(int) - reference.astype(int)).max() <= 8


def test_bfloat16_stays_off_with_a_warning_on_a_cpu_without_it(tiny_store: Path, tmp_path: Path) -> None:
    _, applied, log = generate(tiny_store, tmp_path, "avx2", bfloat16=True)
    assert applied is False
    assert "this CPU has no bfloat16 instructions; staying in float32" in log


@pytest.mark.parametrize(
    ("overrides", "threads"), [({}, 8), ({"max_concurrent_batches": 1}, 8), ({"tf_intra_op_threads": 3}, 3)]
)
def test_the_service_sets_tensorflows_threads_from_its_settings(
    tiny_store: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, int], threads: int
) -> None:
    asked: list[int | None] = []

    def recording(memory_mb: int | None, intra: int | None, inter: int | None, bfloat16: bool) -> DeviceInfo:
        asked.append(intra)
        return runtime.configure_devices()  # this process's TensorFlow keeps its settings for the other tests

    monkeypatch.setattr(config, "usable_cores", lambda: 8)
    monkeypatch.setattr(main, "configure_devices", recording)
    with TestClient(create_app(make_settings(tiny_store, **overrides))) as client:
        wait_until_ready(client)
        assert client.post("/generate", params={"seed": 1, "format": "npy"}).status_code == 200
    assert asked == [threads]


def test_a_thread_count_takes_effect_in_a_fresh_process() -> None:
    probe = (
        "import app.serving.runtime as r, tensorflow as tf; r.configure_devices(intra_op_threads=1);"
        "print(tf.config.threading.get_intra_op_parallelism_threads())"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "1"
