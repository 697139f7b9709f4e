"""The peak resident memory of a process, against a known allocation."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mlorc_lab.memory import peak_rss_bytes

MIB = 2**20

CHILD = """
from mlorc_lab.memory import peak_rss_bytes
before = peak_rss_bytes()
block = bytearray(256 * 2**20)
for index in range(0, len(block), 4096):
    block[index] = 1
print(before, peak_rss_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the exec carry-over is Linux behaviour")
def test_child_peak_excludes_parent_peak():
    # The parent first reaches a peak of at least 512 MiB; a child must not inherit it.
    big = torch.ones(128 * MIB, dtype=torch.float32)
    parent_peak = peak_rss_bytes()
    del big
    output = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    before, after = (int(value) for value in output.stdout.split())

    assert parent_peak >= 512 * MIB
    assert before < parent_peak - 256 * MIB
    # Touching 256 MiB raises the peak by that much, within 16 MiB of interpreter noise.
    assert abs((after - before) - 256 * MIB) <= 16 * MIB
