"""Reliability, training: `dsc train` SIGKILLed mid-run (a real kill of a separate process, after
checkpoint 8 of 12, during step 9) continues with `--resume` from that checkpoint to the same final
loss and adapter weights as an uninterrupted run (CPU, tiny model). See docs/RELIABILITY.md.
(`tests/runtime/test_train.py` checks the same with an exception instead of a kill, plus the refusals.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys


from dsc.runtime.train import train

from test_runtime_support import make_artifact
from test_train import CountSteps, assert_resumed_like_full

SETTINGS = ["max_steps=12", "save_steps=4", "batch_size=8", "logging_steps=1", "learning_rate=3e-3",
            "lora.dropout=0.1"]  # dropout: the resumed run must also restore the RNG state
KILLED_RUN = """
import os, signal, sys
from transformers import TrainerCallback
from dsc.runtime.train import train

class SigkillDuringStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 8:  # checkpoint-8 is on disk; step 9 is under way
            os.kill(os.getpid(), signal.SIGKILL)

train(sys.argv[1], model=sys.argv[2], out=sys.argv[3], overrides=sys.argv[4:], callbacks=[SigkillDuringStep()])
"""


def test_a_sigkilled_training_run_resumes_to_the_same_loss_and_weights(tmp_path, tiny_model_dir):
    artifact = make_artifact(tmp_path / "arith", n_train=48, n_validation=8)
    full = train(artifact, model=str(tiny_model_dir), out=tmp_path / "full", overrides=SETTINGS)

    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(artifact), str(tiny_model_dir), str(out), *SETTINGS],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints[-1] == "checkpoint-8" and not (out / "run.json").exists()

    steps = CountSteps()
    resumed = train(artifact, model=str(tiny_model_dir), out=out, overrides=SETTINGS, resume=True, callbacks=[steps])
    assert_resumed_like_full(full, tmp_path / "full", resumed, out, steps.steps)
