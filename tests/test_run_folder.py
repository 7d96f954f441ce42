"""Run folders survive anything: `kill -9` at random moments of a short run (before the first
checkpoint included) always leaves a folder that goes on to the same final model as an
uninterrupted run, and two runs never share a folder (the second is refused in one line naming
the first's PID; a lock left by a dead process is taken over)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.fuzzing import OUTCOMES, record

SPEC = {"type": "Sequential", "layers": [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
    {"type": "BatchNorm2d", "num_features": 4}, {"type": "ReLU"}, {"type": "Flatten"},
    {"type": "Linear", "in_features": 4 * 6 * 6, "out_features": 3}]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 3, 3000), rng.integers(0, 3, 100)
    x_train = (rng.random((3000, 8, 8)) * 60 + y_train[:, None, None] * 60).astype(np.uint8)
    x_test = (rng.random((100, 8, 8)) * 60 + y_test[:, None, None] * 60).astype(np.uint8)
    np.savez(root / "tiny.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (root / "spec.json").write_text(json.dumps(SPEC))
    return root


def _train_args(root, out, epochs=4):
    return [sys.executable, "-m", "numcnn", "train", "--model", str(root / "spec.json"),
            "--dataset", str(root / "tiny.npz"), "--epochs", str(epochs), "--batch-size", "32",
            "--seed", "3", "--scheduler", "step", "-q", "--out", str(out)]


def _env():
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def _run(args, cwd):
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


def _weights(folder):
    return load_file(str(folder / "model.numcnn"))


def test_kill_9_at_random_moments_then_the_run_goes_on(setup):
    root = setup
    start = time.perf_counter()
    reference = _run(_train_args(root, root / "reference"), root)
    elapsed = time.perf_counter() - start
    assert reference.returncode == 0, reference.stderr
    expected = _weights(root / "reference")

    rng = np.random.default_rng(2026)
    moments = ["before-first-checkpoint"] + list(rng.uniform(0.1, 0.95, 3) * elapsed)
    for k, moment in enumerate(moments):
        out = root / f"killed-{k}"
        child = subprocess.Popen(_train_args(root, out), cwd=root, env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if moment == "before-first-checkpoint":  # as soon as the folder is marked a run
            deadline = time.monotonic() + 60
            while not (out / "config.json").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert not (out / "checkpoint.ckpt").exists()
        else:
            time.sleep(moment)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = ("after a checkpoint" if (out / "checkpoint.ckpt").exists()
                 else "before the first checkpoint")
        record("run folder: kill -9 then go on", state)
        if (out / "config.json").exists() and k % 2 == 1:
            # --resume goes on from the checkpoint, or from scratch when there is none
            done = _run([sys.executable, "-m", "numcnn", "train", "--resume", str(out), "-q"],
                        root)
        else:  # the same command again: a run that never checkpointed restarts in place
            done = _run(_train_args(root, out), root)
            if done.returncode == 2 and (out / "checkpoint.ckpt").exists():
                assert "already holds a run" in done.stderr  # then --resume is the way on
                done = _run([sys.executable, "-m", "numcnn", "train", "--resume", str(out),
                             "-q"], root)
        assert done.returncode == 0, (moment, done.stdout, done.stderr)
        got = _weights(out)
        assert sorted(got) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{moment} {name}")
    print({k: v for k, v in OUTCOMES.items() if k[0].startswith("run folder")})


def test_two_runs_in_one_folder_the_second_is_refused(setup):
    root = setup
    out = root / "shared"
    first = subprocess.Popen(_train_args(root, out, epochs=200), cwd=root, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / "run.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.01)
        second = _run(_train_args(root, out), root)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(first.pid) in lines[0] and "in use" in lines[0]
        resumed = _run([sys.executable, "-m", "numcnn", "train", "--resume", str(out)], root)
        assert resumed.returncode == 1 and str(first.pid) in resumed.stderr
        record("run folder: a second run in a live run's folder", "refused in one line")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock of the dead process is taken over: the run goes on
    done = _run([sys.executable, "-m", "numcnn", "train", "--resume", str(out), "--epochs",
                 "2", "-q"], root)
    assert done.returncode == 0, done.stderr


def test_a_folder_held_by_this_process_is_refused_to_another(tmp_path):
    from numcnn.train import RunFolderBusy, lock_run_dir, unlock_run_dir

    lock_run_dir(tmp_path)
    try:
        code = ("import sys; from numcnn.train import lock_run_dir, RunFolderBusy\n"
                "try: lock_run_dir(sys.argv[1])\n"
                "except RunFolderBusy as e: print(e.pid); sys.exit(3)\n")
        child = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                               text=True, timeout=60)
        assert child.returncode == 3 and child.stdout.strip() == str(os.getpid())
    finally:
        unlock_run_dir(tmp_path)
    assert RunFolderBusy.__mro__[1].__name__ == "NumcnnError"
