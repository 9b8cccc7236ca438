"""The semi-supervised model's baseline: its classifier trained on the labeled images alone.

`aae train semi-supervised ...` (every flag passes through) with phases 1-3 (reconstruction,
discriminators, generator) skipped: only phase 4 runs, the cross-entropy of q(y|x) on the
labeled images, with the same network (trunk and class head), dropout, input noise, labeled
batches, optimizer, learning rate and schedule. What the semi-supervised model gains over this
run is what the unlabeled images give it.

    python benchmarks/labels_only.py train semi-supervised --labels 100 --input-noise 0.3 \\
        --val-size 10000 --epochs 30 --precision bf16 --seed 10 --out runs/labels-only-s10

The run folder is an ordinary semi-supervised run (config, metrics, summary with test_error);
its decoder and discriminators keep their initial weights, so its reconstruction and samples
mean nothing.
"""

from __future__ import annotations

import sys

from torch_aae import semi_supervised


def no_unlabeled_phases(*args, **kwargs) -> dict:
    """Phases 1-3 of `semi_supervised.train_step`, skipped: no loss, no update."""
    return {}


if __name__ == "__main__":
    semi_supervised.adversarial_autoencoder_phases = no_unlabeled_phases
    from torch_aae.cli import main

    sys.exit(main(sys.argv[1:]))
