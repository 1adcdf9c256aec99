"""Which CAM method, at which layer, shows what the model used? Measured, with baselines.

>>> ev = convlens.evaluate(model, "data/", methods="all", layers="auto")
>>> ev.table        # method, layer, pointing, deletion_auc, ..., with 95 % bootstrap CIs
>>> ev.best()       # the (method, layer) the evidence favours, and by how much

Protocols (:mod:`.protocols`): the grid pointing game, ROAD and the three baselines; deletion /
insertion, Average Drop / Increase and the randomization check come from :mod:`convlens.cam`.
"""

from .data import Dataset, resolve_source
from .protocols import (
    BASELINES,
    centre_gaussian,
    make_mosaics,
    pointing_game,
    random_map,
    road,
    road_impute,
    road_impute_batch,
    sobel_map,
)
from .sweep import METRICS, PROTOCOLS, Best, Evaluation, auto_layers, evaluate

__all__ = [
    "BASELINES", "METRICS", "PROTOCOLS", "Best", "Dataset", "Evaluation", "auto_layers",
    "centre_gaussian", "evaluate", "make_mosaics", "pointing_game", "random_map",
    "resolve_source", "road", "road_impute", "road_impute_batch", "sobel_map",
]
