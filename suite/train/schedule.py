"""Learning-rate schedules, as the list of per-step values one stage of training walks through."""

from __future__ import annotations

import math


def warmup_cosine(steps: int, peak: float, warmup: int, final: float = 0.0) -> list[float]:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine decay to ``final``.

    Like optax's ``warmup_cosine_decay_schedule``, which the paper's code uses; precomputed so the
    training loop only indexes a list.
    """
    if steps < 1:
        raise ValueError(f"a stage needs at least one step, got {steps}")
    warmup = max(0, min(warmup, steps - 1))
    decay = steps - warmup
    lrs = [peak * (i + 1) / (warmup + 1) for i in range(warmup)]
    for i in range(decay):
        progress = i / max(decay - 1, 1)
        lrs.append(final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return lrs
