"""Pure scoring and explanation records: numpy only (no database, no FAISS, no torch).

:mod:`.aggregates` turns image vectors and a library's class matrices into exact class
scores (mean, centroid, max) and per-descriptor weights; :mod:`.explanation` holds the
frozen records an explanation is made of.
"""

from whyclip.store.choices import AGGREGATES
from whyclip.store.method.aggregates import (
    ClassMatrices,
    build_class_matrices,
    calibrated_softmax,
    class_sums,
    descriptor_weights,
    score_classes,
    softmax,
    top_k,
)
from whyclip.store.method.explanation import (
    BaselineScore,
    ClassScore,
    Contrast,
    ContrastRow,
    DescriptorScore,
    Explanation,
    Retrieved,
    midpoint_rule,
)
from whyclip.store.method.maps import MAP_KINDS, DescriptorMap, ImageMaps

__all__ = [
    "AGGREGATES",
    "MAP_KINDS",
    "BaselineScore",
    "ClassMatrices",
    "ClassScore",
    "Contrast",
    "ContrastRow",
    "DescriptorMap",
    "DescriptorScore",
    "Explanation",
    "ImageMaps",
    "Retrieved",
    "build_class_matrices",
    "calibrated_softmax",
    "class_sums",
    "descriptor_weights",
    "midpoint_rule",
    "score_classes",
    "softmax",
    "top_k",
]
