"""bf16 (the CUDA workers' default) selects the same examples as float32, except among near-ties."""

import copy

import numpy as np
import torch

from tests.compute.test_dashboard_reference import HOOK, PARAMS, model_make, sae_make, tokens_make
from workers.compute.dashboard import dashboards_compute
from workers.compute.sae import SparseAutoencoder

# bf16 keeps 8 significant bits; through two layers and the encoder, a feature's activation moves by
# about 1% of the size of its pre-activations: examples closer than this are ties at that precision.
TIE = 0.02


def test_bf16_top_examples_differ_from_float32_only_among_near_ties() -> None:
    model, tokens = model_make(), tokens_make()
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.from_numpy(tokens))
        sae = sae_make(cache[HOOK])
        acts = sae.encode(cache[HOOK]).numpy()[:, 1:]  # [N, T - 1, F] float32, BOS excluded
        pre_scale = ((cache[HOOK] - sae.b_dec) @ sae.W_enc + sae.b_enc).abs().amax(dim=(0, 1)).numpy()  # [F]
    model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    sae_bf16 = SparseAutoencoder(sae.config, {name: t.to(torch.bfloat16) for name, t in tensors.items()})

    exact = dashboards_compute(model, sae, tokens, HOOK, PARAMS)
    reduced = dashboards_compute(model_bf16, sae_bf16, tokens, HOOK, PARAMS)

    sequence_best = acts.max(axis=1)  # [N, F] each sequence's strongest float32 activation
    differing = 0
    for feature in range(sae.d_sae):
        scale = float(pre_scale[feature])
        chosen = set(exact.top.seq[feature][exact.top.seq[feature] >= 0].tolist())
        chosen_reduced = set(reduced.top.seq[feature][reduced.top.seq[feature] >= 0].tolist())
        weakest_kept = min((sequence_best[seq, feature] for seq in chosen), default=0.0)
        for seq in chosen_reduced - chosen:  # a sequence only bf16 chose: it must nearly tie the weakest kept one
            differing += 1
            assert sequence_best[seq, feature] >= weakest_kept - TIE * scale
        np.testing.assert_allclose(reduced.max_act[feature], exact.max_act[feature], rtol=TIE, atol=TIE * scale)
    assert (reduced.top.seq >= 0).sum() >= 0.95 * (exact.top.seq >= 0).sum()
    assert differing < 0.05 * (exact.top.seq >= 0).sum()
