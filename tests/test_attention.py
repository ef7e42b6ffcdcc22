import math

import pytest
import torch
import torch.nn.functional as F

from iqart.train.models.attention import cross_attention
from iqart.train.models.clip_backbone import attention_pool, build_clip
from tests.helpers import full_attention_pool_token0


@pytest.mark.parametrize("nq,nk,heads", [(1, 50, 8), (7, 7, 2), (49, 13, 4)])
def test_cross_attention_matches_sdpa(nq, nk, heads):
    q, k, v = torch.randn(3, nq, heads * 64), torch.randn(3, nk, heads * 64), torch.randn(3, nk, heads * 64)
    ours = cross_attention(q, k, v, heads)

    def split(t):
        return t.reshape(3, -1, heads, 64).transpose(1, 2)

    expected = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(3, nq, heads * 64)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_cross_attention_rejects_indivisible_width():
    with pytest.raises(ValueError, match="not divisible"):
        cross_attention(torch.randn(1, 1, 10), torch.randn(1, 2, 10), torch.randn(1, 2, 10), 3)


@pytest.mark.parametrize("h,w", [(7, 7), (3, 11), (1, 1)])
def test_query_only_pool_equals_token0_of_full_attention(h, w):
    pool = build_clip("tiny", seed=3).visual.attnpool
    with torch.no_grad():
        for p in pool.parameters():  # larger weights make the attention non-uniform
            p.normal_(0, 1 / math.sqrt(p.shape[-1]))
        features = torch.randn(2, pool.k_proj.in_features, h, w) * 3
        torch.testing.assert_close(
            attention_pool(pool, features), full_attention_pool_token0(pool, features), rtol=2e-5, atol=2e-5
        )
