"""Dimensionality reduction with an adversarial autoencoder (Makhzani et al. 2015, section 7, Fig. 9).

The encoder q(y, z | x) gives an m-way categorical y (softmax) and an n-D style code z (n = 2 for
a plot). Each cluster k has a learned "cluster head" w_k, an n-D vector; the representation is

    r = sum_k y_k w_k + z      (n-D; y one-hot at the optimum: the head of x's cluster plus z)

and the decoder reconstructs x from r alone. A categorical discriminator pushes y towards
one-hot vectors, a Gaussian one pushes z towards N(0, std^2 I); the reconstruction phase also
pays `sum_{i<j} relu(eta - ||w_i - w_j||)`, which keeps every two heads at least eta apart so that
clusters do not overlap in the representation. Without labels y clusters the data (errors: the
clustering model's two cluster errors); with `--labels N` a supervised phase trains q(y|x) on the labeled images
(m must then be the number of classes; error: the test classification error).
"""

from __future__ import annotations

import torch
from torch import nn

from . import clustering, semi_supervised
from .config import ModelConfig
from .errors import AAEError
from .networks import Decoder
from .semi_supervised import SemiSupervisedAAE, adversarial_autoencoder_phases

# The CLI's defaults for this model where they differ from ModelConfig's / TrainConfig's.
CLI_DEFAULTS = {"z_dim": 2, "prior_std": 1.0, "clusters": 20, "head_distance": 6.0, "epochs": 30,
                "lr_recon": 1e-3, "lr_reg": 2e-4, "beta1_reg": 0.5, "input_noise": 0.3}  # fmt: skip


class DimReductionAAE(SemiSupervisedAAE):
    """Encoder q(y,z|x) with m clusters, cluster heads W (m, n), decoder p(x | W^T y + z)."""

    kind = "dim-reduction"

    def __init__(self, in_dim: int = 784, image_shape=(28, 28), n_classes: int = 20, z_dim: int = 2,
                 hidden: int = 1000, depth: int = 2, disc_hidden: int = 1000, disc_depth: int = 2,
                 dropout: float = 0.2, prior_std: float = 1.0, head_distance: float = 6.0,
                 labeled: bool | None = None):  # fmt: skip
        """`labeled`: whether q(y|x) was trained on labeled images (--labels), so that it is a
        classifier with a test error; set by `setup` (None: a checkpoint older than the flag)."""
        super().__init__(in_dim, image_shape, n_classes, z_dim, hidden, depth, disc_hidden,
                         disc_depth, dropout, prior_std)  # fmt: skip
        if head_distance < 0:
            raise AAEError(f"--head-distance {head_distance}: must be >= 0")
        self.model_args["head_distance"] = head_distance
        if labeled is not None:
            self.model_args["labeled"] = labeled
        self.decoder = Decoder(z_dim, in_dim, [hidden] * depth)  # reads the n-D representation
        # Heads start spread out (a scaled Gaussian draw) so that the penalty starts small.
        self.heads = nn.Parameter(max(head_distance, 1.0) * torch.randn(n_classes, z_dim))  # (m, n)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape):
        if cfg.clusters < 2:
            raise AAEError(f"--clusters {cfg.clusters}: the dim-reduction model needs at least 2")
        return cls(in_dim, image_shape, cfg.clusters, cfg.z_dim, cfg.hidden, cfg.depth,
                   cfg.disc_hidden, cfg.disc_depth, cfg.dropout, cfg.prior_std, cfg.head_distance)  # fmt: skip

    def decoder_input(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return y @ self.heads + z  # (batch, n)

    def recon_penalty(self) -> torch.Tensor:
        return head_penalty(self.heads, self.model_args["head_distance"])

    @torch.no_grad()
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """The n-D representation r = W^T softmax(y) + z of images x (batch, n)."""
        logits, z = self.encoder(x)
        return self.decoder_input(logits.softmax(1), z)


MODEL = DimReductionAAE


def head_penalty(heads: torch.Tensor, eta: float) -> torch.Tensor:
    """sum over pairs i < j of relu(eta - ||w_i - w_j||): 0 once all heads are eta apart."""
    if eta == 0:
        return heads.sum() * 0.0
    i, j = torch.triu_indices(len(heads), len(heads), offset=1)
    return torch.relu(eta - (heads[i] - heads[j]).norm(dim=1)).sum()


def make_optimizers(model: DimReductionAAE, cfg) -> dict:
    """As the semi-supervised model's; the heads learn in the reconstruction phase."""
    opt = semi_supervised.make_optimizers(model, cfg)
    opt["recon"].add_param_group({"params": [model.heads]})
    return opt


def check_evaluable(data) -> None:
    """Before training (`fit`): the splits that the dim-reduction model scores have labels."""
    data.check_labeled_splits("dim-reduction")


def setup(model, data, config, device, run_path) -> dict:
    """With --labels: the labeled images (as the semi-supervised model); else no labels at all."""
    model.model_args["labeled"] = config.data.labels is not None  # saved with the checkpoints
    if config.data.labels is None:
        return {"x": None, "input_noise": config.train.input_noise, "code_noise": config.train.code_noise,
                "cat_noise": config.train.cat_noise, "view": config.train.view,
                "eval_codes": config.train.adv_eval_codes,
                "paired_discriminators": config.train.paired_discriminators}
    if data.num_classes != model.n_classes:
        raise AAEError(f"--labels with --clusters {model.n_classes}: the semi-supervised setting "
                       f"needs one cluster per class, --clusters {data.num_classes}")  # fmt: skip
    return semi_supervised.setup(model, data, config, device, run_path)


def train_step(model: DimReductionAAE, opt: dict, x, y=None, ctx=None, step: int = 0) -> dict:
    """Reconstruction (with the head penalty), discriminators, generator; with labels, then the
    supervised phase of the semi-supervised model."""
    if ctx["x"] is not None:
        return semi_supervised.train_step(model, opt, x, None, ctx, step)
    return adversarial_autoencoder_phases(model, opt, x, ctx["input_noise"], ctx["code_noise"],
                                          ctx["cat_noise"], ctx["view"], ctx["eval_codes"],
                                          ctx["paired_discriminators"])  # fmt: skip


step_inputs = semi_supervised.step_inputs  # with --labels: the labeled batches, drawn ahead
epoch_metrics = clustering.epoch_metrics  # the validation cluster error


def evaluate(model, data, device) -> dict:
    """The cluster errors; with labels (--labels, m = classes) also q(y|x)'s error as a classifier,
    which means nothing for clusters learnt without labels; the head spacing; the style code's
    prior match."""
    out = clustering.evaluate(model, data, device)
    split, x, y = data.eval_split()
    labeled = model.model_args.get("labeled", model.n_classes == data.num_classes)  # (older runs)
    if labeled and model.n_classes == data.num_classes:
        out[f"{split}_error"] = semi_supervised.classification_error(model, x, y, device)
    dist = torch.cdist(model.heads.detach(), model.heads.detach())
    out["head_distance_min"] = float(dist[~torch.eye(len(dist), dtype=torch.bool)].min())
    return out


def make_plots(model, data, folder, device) -> list:
    from . import plots
    from .metrics import collect

    split, x, y = data.eval_split()
    model.eval()
    rep = collect(model.represent, x, device).numpy()
    written = [folder / "representation.png", folder / "clusters.png"]
    plots.save_latent_scatter(rep, None if y is None else y.numpy(), written[0],
                              f"{split} images: {model.z_dim}-D representation W'y + z",
                              axis_name="representation")  # fmt: skip
    clustering.save_cluster_rows(model, data.train_x, device, written[1])
    return written
