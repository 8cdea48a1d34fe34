"""Dataset readers by ``data.source`` name (a registry; the phantom is rendered, not read)."""

from __future__ import annotations

from collections.abc import Callable

from fl_mia.config import DataConfig
from fl_mia.data.sources import folder, msd, nnunet, npz
from fl_mia.data.sources.base import DataError, DatasetIndex, DecodedCase

READERS: dict[str, Callable[[DataConfig], DatasetIndex]] = {
    "folder": folder.index,
    "msd": msd.index,
    "nnunet": nnunet.index,
    "npz": npz.index,
}


def index_dataset(cfg: DataConfig) -> DatasetIndex:
    """Find the dataset's files and labels (no decoding yet)."""
    return READERS[cfg.source](cfg)


__all__ = ["DataError", "DatasetIndex", "DecodedCase", "READERS", "index_dataset"]
