"""Every registered model implements the variant interface that train.py and the CLI call."""

import pytest

from torch_aae.variants import VARIANTS

INTERFACE = ("MODEL", "make_optimizers", "setup", "train_step", "epoch_metrics", "evaluate",
             "make_plots")  # fmt: skip


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_variant_implements_the_interface(kind):
    module = VARIANTS[kind]
    missing = [name for name in INTERFACE if not hasattr(module, name)]
    assert not missing, f"{kind} lacks {missing}"
    assert module.MODEL.kind == kind
    assert callable(module.MODEL.from_config)
