"""torch-aae: Adversarial Autoencoders (Makhzani et al., arXiv 1511.05644) on PyTorch."""

from .api import build_model, encode_images, encode_run, evaluate_run, load_run_config, plot_run
from .classifier import Classifier, classifier_accuracy, features, predict, train_and_cache, train_classifier
from .checkpoint import load_model, save_model
from .config import Config, DataConfig, ModelConfig, TrainConfig
from .data import Dataset, load_dataset
from .download import download_mnist
from .errors import AAEError, AAEWarning, Interrupted
from .metrics import class_histogram, frechet_distance
from .parzen import parzen_evaluate
from .priors import (
    CategoricalPrior, GaussianPrior, MixturePrior, SwissRollPrior, UniformPrior, make_prior,
)  # fmt: skip
from .report import write_report
from .train import fit
from .clustering import ClusteringAAE
from .dim_reduction import DimReductionAAE
from .semi_supervised import SemiSupervisedAAE
from .supervised import SupervisedAAE
from .unsupervised import UnsupervisedAAE
from .variants import defaults

__version__ = "0.1.0"

__all__ = [
    "AAEError", "AAEWarning", "CategoricalPrior", "Classifier", "ClusteringAAE", "Config", "DataConfig", "Dataset",
    "DimReductionAAE", "GaussianPrior", "Interrupted", "MixturePrior", "ModelConfig", "SemiSupervisedAAE", "SupervisedAAE",
    "SwissRollPrior", "TrainConfig", "UniformPrior", "UnsupervisedAAE", "build_model", "defaults",
    "class_histogram", "classifier_accuracy", "download_mnist", "encode_images", "encode_run", "evaluate_run", "features", "fit",
    "frechet_distance", "load_dataset", "load_model", "load_run_config", "make_prior",
    "parzen_evaluate", "plot_run", "predict", "save_model", "train_and_cache", "train_classifier", "write_report",
]  # fmt: skip
