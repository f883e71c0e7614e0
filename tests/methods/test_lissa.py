"""`method="lissa"` (stochastic) against `exact`."""

import warnings

from scipy.stats import spearmanr

import influence as inf


def test_stochastic_lissa_is_close(mlp):
    model, task, train, test = mlp
    exact = inf.Attributor(model, train, task=task, method="exact", progress=False).fit().scores(test)
    attr = inf.Attributor(model, train, task=task, method="lissa", hvp_batch_size=45, repeats=4, max_iter=1500,
                          progress=False).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inf.InfluenceWarning)
        got = attr.scores(test)
    assert spearmanr(exact.flatten(), got.flatten())[0] >= 0.95
