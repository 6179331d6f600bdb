"""The malloc setting of ``npvae._memory``: freed memory is kept for the next step.

Each case runs in a fresh interpreter, since the setting is once per process.
The pattern is a step's: four 2 MB arrays allocated, written and freed, twenty times.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

STEPS = """
import resource, sys
import numpy as np
import npvae
from npvae._memory import keep_freed_memory

def step():
    arrays = [np.ones(500_000, np.float32) for _ in range(4)]  # 2 MB each, written
    del arrays

for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(keep_freed_memory(), faults)
"""


def faults_per_step(**env) -> tuple[bool, float]:
    environment = {**os.environ, **env}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        if name not in env:
            environment.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", STEPS], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 0, done.stderr
    applied, faults = done.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's; elsewhere npvae sets none")
def test_importing_npvae_keeps_a_steps_freed_memory_for_the_next():
    applied, faults = faults_per_step()
    assert applied and faults < 10
    # The same steps with malloc left alone: the memory goes back and faults in again
    # (about 2,000 faults a step), so the check above can fail.
    applied, faults = faults_per_step(NPVAE_MALLOPT="0")
    assert not applied and faults > 500


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's; elsewhere npvae sets none")
def test_the_users_own_malloc_settings_win():
    applied, _ = faults_per_step(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
    applied, _ = faults_per_step(GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert not applied
    applied, _ = faults_per_step(GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F")
    assert applied
