"""A published feature with known numbers, for page and API tests."""

from typing import Any

import pytest

from atlas.features.models import Feature, FeatureExample
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae


@pytest.fixture
def published_feature(language_model: LanguageModel, dataset: Any) -> Feature:
    sae = Sae.objects.create(language_model=language_model, slug="0-res-8", hook_name="blocks.0.hook_resid_post",
                             layer=0, architecture="standard", d_in=language_model.d_model, d_sae=8,
                             files_dir="saes/x")
    run = DashboardRun.objects.create(sae=sae, dataset=dataset, n_sequences=4, top_k=2, context_before=2,
                                      context_after=1, tokens_total=4 * 48, status=DashboardRun.Status.SUCCEEDED)
    sae.published_run = run
    sae.save()
    feature = Feature.objects.create(
        run=run, index=3, frac_nonzero=0.25, max_act=4.0, act_hist_counts=[3, 1],
        logit_pos_ids=[5, 6], logit_pos_values=[2.0, 1.0], logit_neg_ids=[7, 8], logit_neg_values=[-2.0, -1.0],
        logit_hist_counts=[1, 2, 1], logit_hist_min=-3.0, logit_hist_max=3.0,
    )
    FeatureExample.objects.create(feature=feature, kind=FeatureExample.Kind.TOP, rank=0, token_ids=[10, 11, 12],
                                  values=[0.0, 4.0, 1.0], focus=1, value=4.0)
    FeatureExample.objects.create(feature=feature, kind=FeatureExample.Kind.INTERVAL, rank=0, bin_min=0.0,
                                  bin_max=2.0, bin_contains=0.75, token_ids=[13, 14], values=[1.5, 0.0], focus=0,
                                  value=1.5)
    return feature
