"""A process killed while writing leaves the old file or the new one, never a partial file."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from compression_core import atomic_write_bytes

WRITER = r"""
import sys
from compression_core.io import atomic_write_bytes
path = sys.argv[1]
big = bytes(range(256)) * (64 * 1024)  # 16 MiB: slow enough to be killed in the middle
print("ready", flush=True)
i = 0
while True:
    atomic_write_bytes(path, bytes([i % 256]) + big)
    i += 1
"""


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary files left
    assert oct(target.stat().st_mode & 0o777) != "0o600"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_killed_writer_never_leaves_a_partial_file(tmp_path, delay):
    target = tmp_path / "bundle.bin"
    old = b"OLD" * 1000
    atomic_write_bytes(target, old)
    expected_len = 1 + 256 * 64 * 1024
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = target.read_bytes()
    assert data == old or len(data) == expected_len, f"partial file of {len(data)} bytes"
    if data != old:
        body = bytes(range(256)) * (64 * 1024)
        assert hashlib.sha256(data[1:]).digest() == hashlib.sha256(body).digest()
