"""ultralytics' detection trainer without the work whose results taskeval never reads.

taskeval keeps the last epoch's weights and scores them on the test split itself. Even with ``val=False``,
ultralytics validates after the last epoch, and in ``final_eval`` strips ``best.pt`` and validates it once
more: with per-epoch checkpoints (``save=True``) that was a quarter of a ``quick`` detection training
(bench/RESULTS.md). :class:`LastEpochTrainer`, used when the protocol asks for no validation images
(``val_images=0``), validates nothing and strips only ``last.pt``. The training itself (data, model, loss,
optimiser, EMA, schedule) is ultralytics' own, so the weights are the same bit for bit.

Imported only after :func:`detectors.ultralytics_env.prepare` (ultralytics reads its settings at import).
The class lives at module level so that ultralytics' multi-GPU launcher can import it in its workers.
"""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import RANK
from ultralytics.utils.torch_utils import strip_optimizer


class LastEpochTrainer(DetectionTrainer):
    """A :class:`DetectionTrainer` that never validates; ``last.pt`` is stripped of its optimiser as usual."""

    def validate(self):
        # fitness None: no early stopping, no best-epoch selection (ultralytics' own reading of val=False)
        return self.metrics, None

    def final_eval(self):
        if RANK in {-1, 0} and self.last.exists():
            strip_optimizer(self.last)
