"""dsvlib: Deep Support Vectors for PyTorch classifiers.

Public API re-exported here; see the modules for details.
"""
from .models import ModelSpec, Classifier, create_model, list_models, register_model, build_classifier
from .io import ModelFileError, load_model, save_model, default_models, load_card
from .limits import Limits, get_limits
from .synthesize import SynthConfig, SynthResult, StepInfo, synthesize, default_config, soft_targets
from .edit import EditResult, edit, default_edit_config, ssim
from .interpolate import InterpolationResult, interpolate, BlendShift, blend_shift
from .select import SelectConfig, SelectionResult, fit_lambdas, classwise_correlation, write_rank_outputs

__all__ = [
    "ModelSpec", "Classifier", "create_model", "list_models", "register_model", "build_classifier",
    "ModelFileError", "load_model", "save_model", "default_models", "load_card", "Limits", "get_limits",
    "SynthConfig", "SynthResult", "StepInfo", "synthesize", "default_config", "soft_targets",
    "EditResult", "edit", "default_edit_config", "ssim",
    "InterpolationResult", "interpolate", "BlendShift", "blend_shift",
    "SelectConfig", "SelectionResult", "fit_lambdas", "classwise_correlation", "write_rank_outputs",
]
__version__ = "0.1.0"
