"""torch-aae: Adversarial Autoencoders (Makhzani et al., arXiv 1511.05644) on PyTorch."""

from .api import build_model, evaluate_run, load_run_config, plot_run
from .classifier import Classifier, classifier_accuracy, features, predict, train_classifier
from .checkpoint import load_model, save_model
from .config import Config, DataConfig, ModelConfig, TrainConfig
from .data import Dataset, download_mnist, load_dataset
from .errors import AAEError
from .priors import GaussianPrior, make_prior
from .train import fit
from .semi_supervised import SemiSupervisedAAE
from .supervised import SupervisedAAE
from .unsupervised import UnsupervisedAAE

__version__ = "0.1.0"

__all__ = [
    "AAEError", "Classifier", "Config", "DataConfig", "Dataset", "GaussianPrior", "ModelConfig",
    "TrainConfig", "SemiSupervisedAAE", "SupervisedAAE", "UnsupervisedAAE", "classifier_accuracy",
    "features", "predict", "train_classifier", "build_model", "download_mnist", "evaluate_run", "fit", "load_dataset",
    "load_model", "load_run_config", "make_prior", "plot_run", "save_model",
]  # fmt: skip
