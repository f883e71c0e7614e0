"""influence-debugger: which training data caused this prediction?

    import influence as inf
    attr = inf.Attributor(model, train, method="cg").fit()
    attr.top_k(test, k=10).harmful.indices

Sign convention: `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`; removing train_i
changes test_j's loss by about `+score / n_train`. Positive = helpful, negative = harmful.
"""

from influence.attributor import Attributor
from influence.errors import (
    IndexFolderError,
    InfluenceError,
    InfluenceWarning,
    InvalidArgumentError,
    NotFittedError,
)
from influence.diagnostics import Diagnostics
from influence.methods import METHODS, Method, register
from influence.methods.arnoldi import ArnoldiOptions
from influence.methods.cg import CGOptions
from influence.methods.ekfac import EKFACOptions
from influence.methods.exact import ExactOptions
from influence.methods.identity import IdentityOptions
from influence.methods.lissa import LiSSAOptions
from influence.methods.tracin import TracInOptions
from influence.methods.trak import TRAKOptions
from influence.results import GroupScores, Ranking, TopK
from influence.task import ClassificationTask, LanguageModelingTask, RegressionTask, Task, token_labels
from influence.tokens import token_scores

__version__ = "0.1.0"

__all__ = [
    "ArnoldiOptions", "Attributor", "CGOptions", "ClassificationTask", "Diagnostics",
    "EKFACOptions", "ExactOptions", "GroupScores", "IdentityOptions", "IndexFolderError",
    "InfluenceError", "InfluenceWarning", "InvalidArgumentError", "LanguageModelingTask",
    "LiSSAOptions", "METHODS", "Method", "NotFittedError", "Ranking", "RegressionTask",
    "TRAKOptions", "Task", "TopK", "TracInOptions", "register", "token_labels", "token_scores",
]
