"""Data layer: the data model, readers for the community's feature files, the native
format, safe unpickling, validation, masks and the dev-split carve-out."""

from .balm_pickle import read_balm_pickle
from .dataset import Dataset, Split
from .dev_split import ensure_dev
from .errors import DataError
from .gcnet_reader import read_gcnet
from .loader import detect_format, load
from .masks import apply_masks, load_masks, read_mask_file, save_masks, with_masks
from .mmgcn_pickle import read_mmgcn_pickle
from .mmin_reader import read_mmin
from .mmsa_reader import read_mmsa
from .native import load_dataset, save_dataset
from .npz_reader import read_npz
from .safe_pickle import SafeUnpickler, safe_load
from .validation import validate_dataset

__all__ = [
    "Dataset",
    "Split",
    "DataError",
    "load",
    "detect_format",
    "read_balm_pickle",
    "read_mmgcn_pickle",
    "read_npz",
    "read_gcnet",
    "read_mmin",
    "read_mmsa",
    "save_dataset",
    "load_dataset",
    "safe_load",
    "SafeUnpickler",
    "validate_dataset",
    "apply_masks",
    "with_masks",
    "save_masks",
    "load_masks",
    "read_mask_file",
    "ensure_dev",
]
