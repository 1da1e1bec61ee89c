"""Finding the user's raw files below TFDS's ``manual_dir``.

A file is looked up by its published name anywhere below ``manual_dir`` (archives unpack
into folders such as ``KuaiRec 2.0/data/`` or ``wechat_algo_data1/``). A missing directory
or file raises one :class:`~tfdebias.errors.DataError` naming the file and the download
page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tfdebias.errors import DataError

def find_file(root, name: str, *, page: str, required: bool = True) -> Path | None:
    """The file called ``name`` anywhere below ``root`` (the shallowest match).

    ``name`` may hold a folder part (``"train/train_data_ads.csv"``); it is matched as
    a path suffix. Raises one :class:`DataError` naming the file and ``page`` when it
    is missing and ``required``.
    """
    root = Path(root)
    parts = Path(name).parts
    matches = [p for p in root.rglob(parts[-1]) if p.is_file() and p.parts[-len(parts):] == parts]
    if not matches:
        if not required:
            return None
        raise DataError(
            f"raw file {name!r} not found under the manual directory; download it from {page} "
            "and unpack it there",
            path=root / name,
        )
    return min(matches, key=lambda p: (len(p.parts), str(p)))


def check_manual_dir(dl_manager, *, files: Sequence[str], page: str) -> Path:
    """TFDS's ``manual_dir`` as a :class:`Path`, or one :class:`DataError` saying what
    to download from where."""
    try:
        path = Path(dl_manager.manual_dir)
    except (AssertionError, ValueError, OSError):
        where = getattr(dl_manager, "_manual_dir", None)
        raise DataError(
            f"the manual directory is missing or empty; it must hold {', '.join(files)} "
            f"from {page} (pass the folder with --manual-dir)",
            path=where,
        ) from None
    return path
