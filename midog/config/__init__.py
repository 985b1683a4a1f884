"""What can be set, in one place, with the reference's values as defaults: the detector's and
the official metric's constants and the training concerns (`settings`), and the checks every
number from a user, a file or the environment passes before any work (`checks`)."""

from .settings import (
    AP_BOX_HALF_SIZE_MM,
    AP_IOU,
    MATCH_RADIUS_MM,
    MIDOG_SCANNERS,
    MIDOG_UNLABELED_SCANNER,
    RECIPES,
    REFERENCE,
    AugmentConfig,
    DataConfig,
    DetectorConfig,
    OptimConfig,
    Recipe,
    RunConfig,
    SamplingConfig,
    UNIT_NORMALISATION,
    make_recipe,
    run_config,
    run_config_from,
    with_normalisation,
)

__all__ = [
    "AP_BOX_HALF_SIZE_MM", "AP_IOU", "MATCH_RADIUS_MM", "MIDOG_SCANNERS", "MIDOG_UNLABELED_SCANNER", "RECIPES", "REFERENCE",
    "AugmentConfig", "DataConfig", "DetectorConfig", "OptimConfig", "Recipe", "RunConfig", "SamplingConfig",
    "UNIT_NORMALISATION", "make_recipe", "run_config", "run_config_from", "with_normalisation",
]
