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


def test_the_flat_public_api_exports_what_it_lists():
    import torch_aae

    assert [name for name in torch_aae.__all__ if not hasattr(torch_aae, name)] == []
    for name in ("UnsupervisedAAE", "SupervisedAAE", "SemiSupervisedAAE", "fit", "load_model"):
        assert name in torch_aae.__all__
