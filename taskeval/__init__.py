"""taskeval: downstream-task evaluation of infrared-visible image fusion.

Data flow (one module per arrow)::

    dataset on disk -> taskeval.data (PairedDataset) -> fusion_models + taskeval.fusing (FusedSet, cache)
    -> detectors / segmenters (train, predict) -> taskeval.metrics -> taskeval.results -> tables, figures, report
"""

__version__ = "0.1.0"
