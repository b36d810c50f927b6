"""How good the unlabeled targets are: pseudo-labels (and SemiVL's dense CLIP labels) against the true masks.

A diagnostic only. When the unlabeled images have masks (the synthetic set's SegmentationClassAug, or SBD's for
VOC's train_aug), the weak views carry them cropped like the image; the training losses never read them. Per
step, for the pixels that have a true class:

- `coverage`: share that gets a target (confident pseudo-label, or a CLIP label above zeta);
- `precision`: share of the targets that are the true class;
- `object_share`: share of the targets that name an object class (not background);
- `object_recall`: share of the true object pixels that get the right object target.

A semi-supervised method can only add what its targets add: targets that are nearly all background teach the
model nothing about objects (reports/method_comparison.md measures this on the embedded default).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.classes import IGNORE_INDEX

BACKGROUND = 0
KINDS = {"pseudo_label": "pseudo-labels", "guidance": "CLIP labels"}  # term prefix -> name in the log


@torch.no_grad()
def target_counts(target: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """[known, targeted, correct, object targets, true objects, objects found] for target maps (255 = none)."""
    known = truth != IGNORE_INDEX
    targeted = known & (target != IGNORE_INDEX)
    correct = targeted & (target == truth)
    objects = known & (truth != BACKGROUND)
    return torch.stack([known.sum(), targeted.sum(), correct.sum(), (targeted & (target != BACKGROUND)).sum(),
                        objects.sum(), (correct & objects).sum()]).double()


def ratios(counts: torch.Tensor) -> dict[str, float]:
    known, targeted, correct, object_targets, objects, found = counts.tolist()
    share = lambda a, b: a / b if b else 0.0  # noqa: E731
    return {"coverage": share(targeted, known), "precision": share(correct, targeted),
            "object_share": share(object_targets, targeted), "object_recall": share(found, objects)}


@dataclass
class TargetAudit:
    """Counts per kind of target ("pseudo_label", "guidance") since the last `summary`."""

    counts: dict[str, torch.Tensor] = field(default_factory=dict)

    def step(self, kind: str, target: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
        """This step's ratios, as `<kind>_<ratio>` terms; nothing when no pixel has a true class."""
        counts = target_counts(target, truth).cpu()
        if counts[0] == 0:
            return {}
        self.counts[kind] = self.counts.get(kind, torch.zeros_like(counts)) + counts
        return {f"{kind}_{key}": value for key, value in ratios(counts).items()}

    def summary(self) -> str:
        """One log line over the steps since the last call (and start counting afresh); '' without data."""
        parts = []
        for kind, counts in self.counts.items():
            r = ratios(counts)
            parts.append(f"{KINDS.get(kind, kind)} cover {100 * r['coverage']:.1f}% of the pixels, "
                         f"{100 * r['precision']:.1f}% right, {100 * r['object_share']:.1f}% objects, "
                         f"{100 * r['object_recall']:.1f}% of object pixels found")
        self.counts = {}
        return "; ".join(parts)
