"""dsvlib: Deep Support Vectors for PyTorch classifiers.

Public API re-exported here; see the modules for details.
"""
from .models import ModelSpec, Classifier, create_model, list_models, register_model, build_classifier
from .io import ModelFileError, load_model, save_model, default_models, load_card

__all__ = [
    "ModelSpec", "Classifier", "create_model", "list_models", "register_model", "build_classifier",
    "ModelFileError", "load_model", "save_model", "default_models", "load_card",
]
__version__ = "0.1.0"
