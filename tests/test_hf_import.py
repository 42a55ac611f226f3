"""transformers resolves its names lazily and is not thread-safe on a first import: sessions of the class server load
models in parallel threads, so every sample asks for transformers' classes through one lock (sample_models.hf)."""

import subprocess
import sys

import pytest

CHILD = r"""
import threading
from sample_models import tiny_lm
errors = []
def build():
    try:
        tiny_lm.build()
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=build) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors)
assert not errors, errors
"""


@pytest.mark.slow
def test_threads_building_a_transformers_sample_at_once_in_a_fresh_process_all_succeed():
    # Without the lock about one fresh process in three failed with "cannot import name 'GPT2LMHeadModel'".
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr[-2000:]
