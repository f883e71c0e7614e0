"""Replay a training run and attribute it exactly (metagradients through every step).

    from influence.replay import Replay, TrainingRecipe
    recipe = TrainingRecipe(optimizer="adam", lr=1e-2, epochs=500)
    model = recipe.train(copy.deepcopy(initial), X, y, task)            # the run
    scores = Replay(initial, (X, y), recipe, task, trained=model).fit().scores((Xt, yt))

`score[j, i] = −n_train · ∂m_j/∂w_i`: removing train_i changes test_j's measurement by
about +score / n_train (positive = helpful for a loss), the library's convention.
"""

from influence.replay.recipe import TrainingRecipe
from influence.replay.replay import Replay

__all__ = ["Replay", "TrainingRecipe"]
