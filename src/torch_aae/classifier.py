"""The evaluation classifier: a small convolutional net, independent of every AAE, that scores
generated images (the supervised model's conditional accuracy; its penultimate features are meant
for a Frechet distance).

It is trained on a dataset's full training split (`aae classifier train`, a few CPU minutes) and
cached as CACHE/classifier-<checksum>.pt, where CACHE is --cache-dir, else $TORCH_AAE_CACHE, else
~/.cache/torch_aae, and <checksum> identifies the dataset by its *test* split (see
`data_checksum`): that split is the same whatever --subset / --val-size a run used, so a run on a
subset finds the classifier trained on the full training set. The checkpoint is written with
`save_checkpoint` and read back with weights_only loading, like every model of the library.

Metric functions (`predict`, `classifier_accuracy`, `features`) take a classifier and images
(n, features) in [0, 1] and return tensors or floats; they run in eval mode, in batches.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, load_state, save_checkpoint
from .data import Dataset, batches
from .errors import AAEError
from .metrics import collect

KIND = "classifier"
DEFAULT_EPOCHS = 4


class Classifier(nn.Module):
    """Two 5x5 conv + max-pool blocks, a hidden layer (the features), a linear head.

    Args:
        image_shape: (height, width) of one image; inputs are flattened (batch, h * w).
        n_classes: number of classes.
        channels: output channels of the two conv blocks.
        hidden: size of the penultimate layer (the `features`).
        dropout: dropout before the head, in training.
    """

    def __init__(self, image_shape=(28, 28), n_classes: int = 10, channels=(16, 32),
                 hidden: int = 128, dropout: float = 0.25):  # fmt: skip
        super().__init__()
        if len(image_shape) != 2:
            raise AAEError(f"the evaluation classifier needs grey (h, w) images, not {image_shape}")
        if min(image_shape) < 4:  # two 2x2 poolings
            raise AAEError(f"the evaluation classifier needs images of at least 4x4 pixels, not "
                           f"{image_shape[0]}x{image_shape[1]}")  # fmt: skip
        self.model_args = dict(image_shape=list(image_shape), n_classes=n_classes,
                               channels=list(channels), hidden=hidden, dropout=dropout)  # fmt: skip
        self.image_shape = tuple(image_shape)
        c1, c2 = channels
        h, w = image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (batch, c1, h/2, w/2)
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (batch, c2, h/4, w/4)
            nn.Flatten(),
        )  # fmt: skip
        self.embed = nn.Sequential(nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Images (batch, h * w) -> penultimate features (batch, hidden)."""
        return self.embed(self.conv(x.view(-1, 1, *self.image_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (batch, h * w) -> class logits (batch, n_classes)."""
        return self.head(self.embedding(x))


# ----------------------------------------------------------------------------------------------
# Metric functions


def _device(classifier: nn.Module, device):
    return next(classifier.parameters()).device if device is None else torch.device(device)


def predict(classifier: Classifier, images: torch.Tensor, device=None,
            batch_size: int = 1000) -> torch.Tensor:  # fmt: skip
    """Predicted classes (n,) int64 of images (n, features), on the CPU."""
    classifier.eval()
    device = _device(classifier, device)
    return collect(lambda xb: classifier(xb).argmax(1), images, device, batch_size)


def features(classifier: Classifier, images: torch.Tensor, device=None,
             batch_size: int = 1000) -> torch.Tensor:  # fmt: skip
    """Penultimate features (n, hidden) of images (n, features), on the CPU."""
    classifier.eval()
    return collect(classifier.embedding, images, _device(classifier, device), batch_size)


def classifier_accuracy(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor,
                        device=None, batch_size: int = 1000) -> float:  # fmt: skip
    """Fraction of images (n, features) whose predicted class is `labels` (n,)."""
    if len(images) != len(labels):
        raise AAEError(f"{len(images)} images but {len(labels)} labels")
    predicted = predict(classifier, images, device, batch_size)
    return float((predicted == labels.cpu()).float().mean())


# ----------------------------------------------------------------------------------------------
# Training and the cache


def train_classifier(data: Dataset, epochs: int = DEFAULT_EPOCHS, batch_size: int = 100,
                     lr: float = 1e-3, seed: int = 0, device="cpu", progress: bool = True,
                     **model_args) -> Classifier:  # fmt: skip
    """Train a `Classifier` on data's training split with Adam (lr / 10 in the last epoch).

    Args:
        model_args: passed to `Classifier` (channels, hidden, dropout), e.g. tiny nets in tests.
    Returns:
        The trained classifier, in eval mode, on `device`.
    """
    if data.train_y is None or data.num_classes is None:
        raise AAEError(f"{data.name}: the evaluation classifier needs labels; the dataset has none")
    if epochs <= 0:
        raise AAEError(f"--epochs {epochs}: must be positive")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = Classifier(data.image_shape, data.num_classes, **model_args).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.train_x.to(device), data.train_y.to(device)
    steps = epochs * -(-len(x) // batch_size)
    bar = tqdm(total=steps, desc="classifier", disable=None if progress else True, dynamic_ncols=True,
               leave=False)  # fmt: skip
    model.train()
    for epoch in range(epochs):
        if epoch == epochs - 1 and epochs > 1:  # a lower rate to settle the last epoch
            for group in opt.param_groups:
                group["lr"] = lr / 10
        for idx in batches(len(x), batch_size):
            idx = idx.to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    return model.eval()


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The classifier cache: `path`, else $TORCH_AAE_CACHE, else ~/.cache/torch_aae."""
    if path is not None:
        return Path(path)
    if os.environ.get("TORCH_AAE_CACHE"):
        return Path(os.environ["TORCH_AAE_CACHE"])
    return Path.home() / ".cache" / "torch_aae"


def data_checksum(data: Dataset) -> str:
    """16 hex digits of the sha256 of the dataset's test images and labels (its identity: the
    test split does not change with --subset or --val-size)."""
    if data.test_x is None or data.test_y is None:
        raise AAEError(
            f"{data.name}: the evaluation classifier needs a labeled test split (x_test, y_test)"
        )
    digest = hashlib.sha256()
    digest.update(data.test_x.to(torch.float32).contiguous().numpy().tobytes())
    digest.update(data.test_y.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def classifier_path(data: Dataset, cache: str | os.PathLike | None = None) -> Path:
    """Where the classifier of `data` is (or would be) cached."""
    return cache_dir(cache) / f"classifier-{data_checksum(data)}.pt"


def save_classifier(classifier: Classifier, path: str | os.PathLike, info: dict) -> None:
    """Write the classifier's weights, constructor arguments and `info` (plain data) atomically;
    `info` is also readable in the .json beside it."""
    payload = {"model_kind": KIND, "model_args": classifier.model_args, "config": info,
               "networks": classifier.state_dict()}  # fmt: skip
    save_checkpoint(Path(path), payload, {"model_kind": KIND, "model_args": classifier.model_args,
                                          **info})  # fmt: skip


def load_classifier(path: str | os.PathLike, device="cpu", data: Dataset | None = None) -> Classifier:
    """Rebuild a saved classifier (weights_only loading), in eval mode; with `data`, refuse one
    trained on other data (a file of the cache copied or renamed)."""
    ckpt = load_checkpoint(Path(path))
    if ckpt["model_kind"] != KIND:
        raise AAEError(f"{path}: a {ckpt['model_kind']} checkpoint, not an evaluation classifier")
    if data is not None:
        args, info, checksum = ckpt["model_args"], ckpt.get("config", {}), data_checksum(data)
        theirs = info.get("checksum", checksum)  # train_and_cache records it
        if theirs != checksum or tuple(args["image_shape"]) != tuple(data.image_shape) or args["n_classes"] != data.num_classes:
            raise AAEError(f"{path}: the classifier of other data ({info.get('dataset', '?')}, "
                           f"{args['image_shape'][0]}x{args['image_shape'][1]} images, {args['n_classes']} "
                           f"classes, test split {theirs}), not of {data.name} (test split {checksum})")  # fmt: skip
    model = Classifier(**ckpt["model_args"])
    load_state(model, ckpt["networks"], "networks")
    return model.to(device).eval()


def require_classifier(data: Dataset, cache: str | os.PathLike | None = None) -> Path:
    """The path of data's cached classifier; a clear error when it has not been trained yet."""
    path = classifier_path(data, cache)
    if not path.is_file():
        raise AAEError(
            f"no evaluation classifier for {data.name} in {path.parent} (looked for {path.name}); "
            f"train it first (a few CPU minutes) with {_how_to_train(data)}; the cache is $TORCH_AAE_CACHE, else "
            "~/.cache/torch_aae (`aae classifier train --cache-dir DIR` writes to DIR: set "
            "TORCH_AAE_CACHE=DIR for the supervised model to find it there)"
        )
    return path


def _how_to_train(data: Dataset, retrain: str = "") -> str:
    """The command (or call) that trains data's classifier; `retrain`: its --retrain flag (or
    argument), and --cache-dir for a cache found elsewhere than by default."""
    dataset = (data.source or {}).get("dataset", data.name)
    flag = "" if dataset == "mnist" else f" --dataset {dataset}"
    if data.source is None:
        return (f"train_and_cache(data{retrain and ', retrain=True'}) (a Dataset built in Python, which "
                "`aae classifier train` cannot load)")  # fmt: skip
    return f"`aae classifier train{flag}{retrain}`, or train_and_cache(data{retrain and ', retrain=True'}) from Python"


def _check_writable(path: Path) -> None:
    """Refuse a cache where the classifier at `path` cannot be written, with the folder named."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where the folder should be, no permission, ...
        raise AAEError(f"classifier cache {folder}: cannot make it ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise AAEError(f"classifier cache {folder}: not writable")
    if path.exists() and not path.is_file():
        raise AAEError(f"classifier cache: {path} is not a file; move it away")


def cached_classifier(data: Dataset, cache: str | os.PathLike | None = None,
                      device="cpu") -> Classifier:  # fmt: skip
    """The cached classifier of `data` (see `require_classifier`), in eval mode on `device`."""
    return _load_cached(require_classifier(data, cache), device, data)


def _load_cached(path: Path, device, data: Dataset) -> Classifier:
    """load_classifier(path, device, data), its errors saying how to replace the file."""
    try:
        return load_classifier(path, device, data)
    except AAEError as e:
        retrain = " --retrain" if path.parent == cache_dir() else f" --cache-dir {path.parent} --retrain"
        raise AAEError(f"{e}; delete it, or replace it with {_how_to_train(data, retrain)}") from None


def check_cached(data: Dataset, cache: str | os.PathLike | None = None) -> None:
    """Before the work that needs it: data's cached classifier exists and is data's (it is
    small: loading it costs a fraction of a second)."""
    _load_cached(require_classifier(data, cache), "cpu", data)


def train_and_cache(data: Dataset, cache: str | os.PathLike | None = None,
                    epochs: int = DEFAULT_EPOCHS, seed: int = 0, device="cpu",
                    retrain: bool = False,
                    progress: bool = True) -> tuple[Classifier, dict]:  # fmt: skip
    """Train (or, unless `retrain`, reuse) the cached classifier of `data`.

    Returns:
        The classifier and its info: path, test_accuracy, cached (bool), epochs, seed, dataset,
        checksum, train_seconds.
    """
    if epochs <= 0:  # refused with a cached classifier too, as without one
        raise AAEError(f"--epochs {epochs}: must be positive")
    path = classifier_path(data, cache)
    if path.is_file() and not retrain:
        model = _load_cached(path, device, data)
        acc = classifier_accuracy(model, data.test_x, data.test_y)
        info = {**load_checkpoint(path)["config"], "test_accuracy": round(acc, 5)}
        return model, {**info, "path": str(path), "cached": True}
    _check_writable(path)  # before the training, which a cache that cannot be written would lose
    start = time.perf_counter()
    model = train_classifier(data, epochs, seed=seed, device=device, progress=progress)
    info = {
        "dataset": data.name, "checksum": data_checksum(data), "epochs": epochs, "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "test_accuracy": round(classifier_accuracy(model, data.test_x, data.test_y), 5),
    }  # fmt: skip
    save_classifier(model, path, info)
    return model, {**info, "path": str(path), "cached": False}
