"""Post-processing of a volume's probabilities (on the network's slice grid) before restoration.

- **Component selection** (``segmentation.component_selection``): keep the 26-connected
  foreground component with the highest SUMMED probability (a confident lesion beats a larger,
  fainter blob); every other foreground voxel is set to 0.
- **One lesion per patient** (``segmentation.lesions: one``, issue 25): a cohort property (a
  primary tumour such as cervix or sarcoma): the component above is always kept, and the mask is
  never empty. When no voxel exceeds the threshold, the FALLBACK keeps the 26-connected component
  of ``probs > fallback_threshold`` that contains the maximum-probability voxel (just that voxel
  when even the maximum is below it); the fallback threshold is chosen on the validation patients
  after training (:func:`choose_fallback_threshold`: the candidate whose fallback masks have the
  highest mean Dice there). The kept voxels are set to 1 so the restored mask keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FALLBACK_CANDIDATES = (0.4, 0.3, 0.2, 0.1, 0.05)
DEFAULT_FALLBACK = 0.2  # when no validation patient is available to choose one


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim))


def select_component(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities with every foreground component but the one of highest summed probability set to 0."""
    m = probs > threshold
    lab, n = _label(m)
    if n <= 1:
        return probs
    mass = ndimage.sum_labels(probs, lab, index=np.arange(1, n + 1))
    keep = lab == (1 + int(np.argmax(mass)))
    return np.where(keep | ~m, probs, 0.0).astype(probs.dtype)


def component_at_max(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: the component of ``probs > threshold`` holding the maximum-probability voxel (that
    voxel alone when the maximum does not exceed ``threshold``)."""
    peak = np.unravel_index(int(np.argmax(probs)), probs.shape)
    keep = np.zeros(probs.shape, dtype=bool)
    if probs[peak] <= threshold:
        keep[peak] = True
        return keep
    lab, _ = _label(probs > threshold)
    return lab == lab[peak]


@dataclass(frozen=True)
class Postprocessing:
    """What is applied to every predicted volume (stored in model.pt, chosen at training)."""

    threshold: float = 0.5
    component_selection: bool = False
    lesions: str = "any"  # 'one': one component, never empty (module docstring)
    fallback_threshold: float = DEFAULT_FALLBACK

    def apply(self, probs: np.ndarray) -> tuple[np.ndarray, bool]:
        """(post-processed probabilities, whether the one-lesion fallback was used)."""
        if self.lesions != "one":
            return (select_component(probs, self.threshold) if self.component_selection else probs), False
        if (probs > self.threshold).any():
            return select_component(probs, self.threshold), False
        keep = component_at_max(probs, min(self.fallback_threshold, self.threshold))
        return keep.astype(probs.dtype), True

    @classmethod
    def from_info(cls, info: dict, threshold: float | None = None, component_selection: bool | None = None):
        """From a checkpoint header (keys absent in older checkpoints take the defaults)."""
        return cls(threshold=float(info.get("threshold", 0.5) if threshold is None else threshold),
                   component_selection=bool(info.get("component_selection", False)
                                            if component_selection is None else component_selection),
                   lesions=str(info.get("lesions", "any")),
                   fallback_threshold=float(info.get("fallback_threshold", DEFAULT_FALLBACK)))


def choose_fallback_scores(per_patient: list[dict]) -> tuple[float, dict]:
    """From each validation patient's {candidate threshold: Dice of its fallback mask}: the candidate with
    the highest mean Dice (ties: the higher threshold) and the mean per candidate."""
    if not per_patient:
        return DEFAULT_FALLBACK, {}
    cands = list(per_patient[0])
    scores = {t: float(np.mean([d[t] for d in per_patient])) for t in cands}
    best = max(cands, key=lambda t: (scores[t], t))
    return float(best), {f"{t:g}": round(v, 4) for t, v in scores.items()}


def choose_fallback_threshold(cases: list[tuple[np.ndarray, np.ndarray]],
                              candidates=FALLBACK_CANDIDATES) -> tuple[float, dict]:
    """The candidate whose fallback mask (:func:`component_at_max`) has the highest mean Dice over
    ``cases`` (probabilities, reference mask) of the validation patients; ties go to the higher one."""
    from .metrics import overlap_metrics

    return choose_fallback_scores([{t: overlap_metrics(component_at_max(p, t), truth > 0)["dice"] for t in candidates}
                                   for p, truth in cases])


__all__ = ["Postprocessing", "select_component", "component_at_max", "choose_fallback_threshold",
           "choose_fallback_scores",
           "FALLBACK_CANDIDATES"]
