"""The fused attention torch op compiles on this CPU machine exactly as it would on the GPU machine:
engine.backends.fused_op.compile_op with torch's own extension flags, for the H200's sm_90 (the
architecture torch picks there from the GPU), and the library it builds loads and registers the
op's schema. Nothing runs on a GPU; benchmarks/gpu_verify.sh runs the op there.

Slow (about 20 s of nvcc and g++ on 2 cores): `python3 -m pytest -m slow tests/test_fused_op_compile.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cuda_tools import CUOBJDUMP

CUDA_ROOT = Path("/usr/local/cuda")
# gpu_verify.sh names the toolkit this way (torch guesses CUDA_HOME from nvcc's folder, which a
# wrapper script in /usr/local/bin misleads); the test compiles under the same setting.
CUDA_HOME = os.environ.get("CUDA_HOME") or (str(CUDA_ROOT) if (CUDA_ROOT / "bin" / "nvcc").is_file() else None)
SCHEMA = "iqart::fused_cross_attention(Tensor q, Tensor k, Tensor v, int num_heads, float scale) -> Tensor"

COMPILE = """
import sys
from pathlib import Path
import torch
from iqart.engine.backends import fused_op
fused_op.compile_op(Path(sys.argv[1]))
print("schema:", torch.ops.iqart.fused_cross_attention.default._schema)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    CUDA_HOME is None or not (Path(CUDA_HOME) / "include" / "cuda_runtime_api.h").is_file(),
    reason="needs the CUDA toolkit (nvcc and its headers; set CUDA_HOME)",
)
def test_torch_op_compiles_for_sm90_with_torchs_flags_and_registers(tmp_path):
    env = {**os.environ, "CUDA_HOME": CUDA_HOME, "TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": "2"}
    result = subprocess.run(
        [sys.executable, "-c", COMPILE, str(tmp_path)], capture_output=True, text=True, env=env, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert f"schema: {SCHEMA}" in result.stdout
    assert (tmp_path / "iqart_fused_attention.so").is_file()
    ninja = (tmp_path / "build.ninja").read_text()
    cuda_flags = re.search(r"^cuda_cflags = (.*)$", ninja, re.MULTILINE).group(1)
    assert "-gencode=arch=compute_90,code=sm_90" in cuda_flags  # torch's arch flag for an H200
    assert "-O3" in cuda_flags and "--expt-relaxed-constexpr" in cuda_flags  # ours, and one of torch's own
    assert re.search(r"^build fused_cross_attention\.cuda\.o: cuda_compile ", ninja, re.MULTILINE)
    if CUOBJDUMP:  # the library holds sm_90 machine code, not only PTX for the driver to compile
        listing = subprocess.run(
            [CUOBJDUMP, "--list-elf", str(tmp_path / "iqart_fused_attention.so")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "sm_90" in listing, listing
