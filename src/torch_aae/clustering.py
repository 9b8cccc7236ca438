"""Unsupervised clustering with an adversarial autoencoder (Makhzani et al. 2015, section 6).

The semi-supervised architecture without its supervised phase and without any label: the
encoder q(y, z | x) has a K-way categorical head y (the cluster) and a continuous style code z;
a categorical discriminator pushes softmax(y) towards one-hot vectors drawn uniformly from the K
clusters, a Gaussian one pushes z towards N(0, std^2 I); the decoder reconstructs x from
(softmax(y), z). Per mini-batch: reconstruction, both discriminators, generator.

Two errors score the clusters on the test set (labels are read only there, after training):
- `cluster_error`, by majority: each cluster takes the most frequent label of the training images
  it holds (`test_cluster_error`). The usual clustering metric, and the most lenient labeling.
- `paper_cluster_error`, the paper's rule (section 6): each cluster i takes the label of the one
  validation image x_n that maximizes q(y_i|x_n) (`test_cluster_error_paper_rule`).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .errors import AAEError
from .semi_supervised import SemiSupervisedAAE, adversarial_autoencoder_phases

# The CLI's defaults for this model where they differ from ModelConfig's / TrainConfig's.
CLI_DEFAULTS = {"z_dim": 10, "prior_std": 1.0, "clusters": 16, "epochs": 30,
                "lr_recon": 1e-3, "lr_reg": 2e-4, "beta1_reg": 0.5, "input_noise": 0.3}  # fmt: skip


class ClusteringAAE(SemiSupervisedAAE):
    """Encoder q(y,z|x) with K clusters, decoder p(x|y,z), categorical and Gaussian discriminators."""

    kind = "clustering"

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, image_shape):
        if cfg.clusters < 2:
            raise AAEError(f"--clusters {cfg.clusters}: the clustering model needs at least 2")
        return cls(in_dim, image_shape, cfg.clusters, cfg.z_dim, cfg.hidden, cfg.depth,
                   cfg.disc_hidden, cfg.disc_depth, cfg.dropout, cfg.prior_std)  # fmt: skip


MODEL = ClusteringAAE


def make_optimizers(model: ClusteringAAE, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """The semi-supervised model's, without the supervised phase's."""
    from .semi_supervised import make_optimizers as semi_optimizers

    opt = semi_optimizers(model, cfg)
    del opt["sup"]
    return opt


def check_evaluable(data) -> None:
    """Before training (`fit`): the splits that the clustering model scores have labels."""
    data.check_labeled_splits("clustering")


def setup(model, data, config, device, run_path) -> dict:
    return {"input_noise": config.train.input_noise, "code_noise": config.train.code_noise,
            "cat_noise": config.train.cat_noise, "view": config.train.view,
            "eval_codes": config.train.adv_eval_codes,
            "paired_discriminators": config.train.paired_discriminators}


def train_step(model: ClusteringAAE, opt: dict, x, y=None, ctx=None, step: int = 0) -> dict:
    """Reconstruction, discriminators, generator on a batch of images; `y` is never read."""
    return adversarial_autoencoder_phases(model, opt, x, ctx["input_noise"], ctx["code_noise"],
                                          ctx["cat_noise"], ctx["view"], ctx["eval_codes"],
                                          ctx["paired_discriminators"])  # fmt: skip


def cluster_error(train_clusters, train_labels, test_clusters, test_labels, n_clusters: int) -> float:
    """The clustering error by majority vote: each cluster is labeled with the most frequent training
    label among its training members; the error of that labeling on the test set. A test image
    in a cluster that holds no training image counts as an error.

    Args:
        train_clusters, test_clusters: (n,) cluster index of each image, in [0, n_clusters).
        train_labels, test_labels: (n,) class labels (non-negative integers).
    """
    train_clusters, train_labels = np.asarray(train_clusters), np.asarray(train_labels)
    test_clusters, test_labels = np.asarray(test_clusters), np.asarray(test_labels)
    if len(train_clusters) != len(train_labels) or len(test_clusters) != len(test_labels):
        raise AAEError("cluster_error: clusters and labels differ in length")
    if len(test_labels) == 0:
        raise AAEError("cluster_error: no test images")
    _check_indices("cluster_error", train_clusters=(train_clusters, n_clusters),
                   test_clusters=(test_clusters, n_clusters), train_labels=(train_labels, None),
                   test_labels=(test_labels, None))  # fmt: skip
    n_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    counts = np.zeros((n_clusters, n_classes), dtype=np.int64)  # (cluster, label) co-occurrences
    np.add.at(counts, (train_clusters, train_labels), 1)
    cluster_label = np.where(counts.sum(1) > 0, counts.argmax(1), -1)  # (n_clusters,)
    return float((cluster_label[test_clusters] != test_labels).mean())


def _check_indices(fn: str, **arrays) -> None:
    """Refuse a name=(values, bound) whose values are not integers in [0, bound) (bound None:
    no upper one): numpy would index with them all the same, -1 as the last cluster or class."""
    for name, (values, bound) in arrays.items():
        if values.size and not (np.issubdtype(values.dtype, np.integer) and values.min() >= 0
                                and (bound is None or values.max() < bound)):  # fmt: skip
            where = "non-negative integers" if bound is None else f"integers in [0, {bound})"
            raise AAEError(f"{fn}: {name} must be {where}; got values from {values.min()} to {values.max()}")


def log_probabilities(logits) -> np.ndarray:
    """log q(y|x) from logits (n, K), in float64 and without rounding to 0 near certainty, so
    that images whose q(y_i|x) all round to 1.0 in float32 are still ranked (as the paper's rule
    must rank them). With m the largest logit and r = sum over the other classes j of
    exp(l_j - m), logsumexp(l) = m + log1p(r), so log q_i = (l_i - m) - log1p(r): exact near
    q = 1, where 1 - q underflows, and O(n K) memory."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise AAEError(f"log_probabilities: logits of shape {logits.shape}; expected (n, K)")
    rows = np.arange(len(logits))
    top = logits.argmax(1)
    with np.errstate(invalid="ignore"):  # inf - inf, set right below
        shifted = logits - logits[rows, top][:, None]  # l_j - m: 0 at the top class, <= 0 elsewhere
    shifted[rows, top] = 0.0  # also where m is +inf or -inf (inf - inf is NaN)
    others = np.exp(shifted)
    others[rows, top] = 0.0  # the top class left out: r sums the others alone
    return shifted - np.log1p(others.sum(1))[:, None]


def paper_cluster_error(ref_log_probs, ref_labels, test_clusters, test_labels) -> float:
    """The paper's clustering error (section 6): each cluster i takes the label of the one
    reference image x_n (the paper: a validation image) that maximizes q(y_i|x_n); the error of
    that labeling on the test set.

    Args:
        ref_log_probs: (n, K) log q(y|x) of the reference images (`log_probabilities`; any
            increasing function of q ranks alike); ref_labels: (n,) their labels.
        test_clusters, test_labels: (m,) cluster index and label of each test image.
    """
    ref_log_probs, ref_labels = np.asarray(ref_log_probs), np.asarray(ref_labels)
    test_clusters, test_labels = np.asarray(test_clusters), np.asarray(test_labels)
    if len(ref_log_probs) != len(ref_labels) or len(test_clusters) != len(test_labels):
        raise AAEError("paper_cluster_error: probabilities, clusters and labels differ in length")
    if len(ref_log_probs) == 0 or len(test_labels) == 0:
        raise AAEError("paper_cluster_error: no reference or no test images")
    _check_indices("paper_cluster_error", test_clusters=(test_clusters, ref_log_probs.shape[-1]))
    cluster_label = ref_labels[ref_log_probs.argmax(0)]  # (K,) the label of each cluster's most confident image
    return float((cluster_label[test_clusters] != test_labels).mean())


def _clusters(model, x, device) -> np.ndarray:
    from .metrics import collect

    model.eval()
    return collect(model.classify, x, device, 1000).numpy()


def epoch_metrics(model, data, device) -> dict[str, float]:
    """Cluster error on the validation split (clusters labeled from the training split)."""
    if data.val_x is None or data.train_y is None:
        return {}
    train = _clusters(model, data.train_x, device)
    val = _clusters(model, data.val_x, device)
    return {"eval/val_cluster_error": cluster_error(train, data.train_y.numpy(), val,
                                                    data.val_y.numpy(), model.n_classes)}  # fmt: skip


def evaluate(model, data, device) -> dict[str, float]:
    """Both cluster errors on the evaluation split (when the data has labels to score it with),
    clusters in use, and the style code's prior match. The paper's rule reads the validation
    split, or the training images when there is none (or when it is the evaluation split)."""
    from .metrics import collect, prior_match, recon_bce

    split, x, y = data.eval_split()
    train = _clusters(model, data.train_x, device)
    out = {"clusters_used": len(np.unique(train))}
    if data.train_y is not None and y is not None:
        held_out = _clusters(model, x, device)
        out[f"{split}_cluster_error"] = cluster_error(train, data.train_y.numpy(), held_out, y.numpy(),
                                                      model.n_classes)  # fmt: skip
        has_val = data.val_x is not None and data.val_y is not None and split != "val"
        ref_x, ref_y = (data.val_x, data.val_y) if has_val else (data.train_x, data.train_y)
        model.eval()
        with torch.no_grad():
            logits = collect(model.encoder.classify, ref_x, device, 1000).float().numpy()
        out[f"{split}_cluster_error_paper_rule"] = paper_cluster_error(log_probabilities(logits), ref_y.numpy(),
                                                                       held_out, y.numpy())  # fmt: skip
    model.eval()
    out[f"{split}_recon_bce"] = recon_bce(model, x, device)
    out.update(prior_match(collect(model.encode, x, device).numpy(), model.prior.std))
    return out


def top_images(model, x: torch.Tensor, device, per_cluster: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """For each cluster, the images of `x` it holds with the highest probability (paper Fig. 8):
    (K * per_cluster, features), row k = cluster k, blank where a cluster holds fewer images;
    and the number of images of `x` each cluster holds, (K,)."""
    from .metrics import collect

    model.eval()
    probs = collect(model.class_probabilities, x, device, 1000)  # (n, K)
    assigned = probs.argmax(1)
    rows = []
    for k in range(model.n_classes):
        members = (assigned == k).nonzero().squeeze(1)
        best = members[probs[members, k].argsort(descending=True)[:per_cluster]]
        row = torch.zeros(per_cluster, x.shape[1])
        row[: len(best)] = x[best]
        rows.append(row)
    return torch.cat(rows), assigned.bincount(minlength=model.n_classes)


def save_cluster_rows(model, x: torch.Tensor, device, path, per_cluster: int = 10) -> None:
    """clusters.png: a row for each cluster that holds images of `x` (the empty ones are left
    out), its most confident images, named by the cluster's number and size."""
    from . import plots

    images, sizes = top_images(model, x, device, per_cluster)
    used = sizes.nonzero().squeeze(1).tolist()
    rows = images.view(model.n_classes, per_cluster, -1)[used].reshape(-1, x.shape[1])
    empty = model.n_classes - len(used)
    plots.save_image_rows(rows.numpy(), model.image_shape, [f"{k}: {int(sizes[k])}" for k in used], path,
                          "each row: a cluster's most confident training images"
                          + (f" ({empty} empty clusters left out)" if empty else ""))  # fmt: skip


def make_plots(model, data, folder, device) -> list:
    from .semi_supervised import plot_codes_and_samples

    written = plot_codes_and_samples(model, data, folder, device, 10 * model.n_classes)
    written.append(folder / "clusters.png")
    save_cluster_rows(model, data.train_x, device, written[-1])
    return written
