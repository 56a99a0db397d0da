"""The vector database: libraries, classes and descriptors in SQL, vectors in FAISS,
exact class scoring and explanations. Imports no torch and no streamlit."""

from .errors import EncoderMismatch, InputError, LibraryNotFound, ModelLoadError, StoreError, WhyclipError
from .explain import BaselineScore, ClassScore, Contrast, ContrastRow, DescriptorScore, Explanation, Retrieved
from .library import Store
from .query import Library
from .records import DraftClass, EncoderInfo, LibraryDraft, LibraryInfo
from .scoring import AGGREGATES, ClassMatrices, build_class_matrices, score_classes, softmax

__all__ = [
    "AGGREGATES", "BaselineScore", "ClassMatrices", "ClassScore", "Contrast", "ContrastRow",
    "DescriptorScore", "DraftClass", "EncoderInfo", "EncoderMismatch", "Explanation", "InputError",
    "Library", "LibraryDraft", "LibraryInfo", "LibraryNotFound", "ModelLoadError", "Retrieved",
    "Store", "StoreError", "WhyclipError", "build_class_matrices", "score_classes", "softmax",
]  # fmt: skip
