"""Small calls of the fused op covering every kernel path, for compute-sanitizer (gpu_verify.sh):
split keys with and without the combine kernel, tiled with and without it, each head size and
dtype, one key, and a batch whose row count is not a multiple of any tile."""

from __future__ import annotations

import torch

from iqart.engine.backends import fused_op
from iqart.train.attention import cross_attention

# (batch, q_len, kv_len, heads, head_dim)
CASES = [
    (1, 1, 3000, 32, 64),   # split keys + combine
    (2, 1, 50, 32, 64),     # split keys, single chunk
    (1, 3, 1, 4, 64),       # one key
    (2, 100, 100, 4, 64),   # tiled, partial query tile
    (1, 64, 2000, 4, 64),   # tiled + combine
    (3, 1, 700, 8, 32),
    (1, 70, 300, 2, 128),   # tiled with > 48 KB of shared memory
    (1, 2, 900, 2, 128),
]

for dtype in (torch.float16, torch.float32):
    for batch, q_len, kv_len, heads, head_dim in CASES:
        q = torch.randn(batch, q_len, heads * head_dim, device="cuda", dtype=dtype)
        k, v = (torch.randn(batch, kv_len, heads * head_dim, device="cuda", dtype=dtype) for _ in range(2))
        out = fused_op.fused_cross_attention(q, k, v, heads)
        # Reference on the CPU, so the sanitizers see no GPU work but the op's and torch's fills.
        ref = cross_attention(q.float().cpu(), k.float().cpu(), v.float().cpu(), heads)
        err = ((out.float().cpu() - ref).abs().max() / ref.abs().max()).item()
        assert err < 5e-3, (dtype, batch, q_len, kv_len, heads, head_dim, err)
torch.cuda.synchronize()
print("memcheck driver: all cases ran")
