"""Write files and directories so that a reader never sees half of one.

Every file tfdebias writes for a user (run directories, results tables, exports, prepared
data, tuner state) goes through this module: the content is written to a temporary
sibling and renamed into place, and a directory is assembled under a temporary name and
published by renaming it. A crash, a full disk or Ctrl-C leaves either the old complete
file or directory or the new complete one, never a torn one.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_json(d / "a.json", {"x": 1})
>>> (d / "a.json").read_text()
'{\\n  "x": 1\\n}\\n'
>>> with staging_dir(d / "run") as work:
...     _ = write_text(work / "done.txt", "ok")
>>> sorted(p.name for p in d.iterdir())
['a.json', 'run']
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping


def write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it to ``path``.

    The building block of the writers below, for files a library writes itself
    (``fig.savefig(tmp)``, ``np.savez(tmp, ...)``); the temporary keeps ``path``'s suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def jsonable(o):
    """``json.dump``'s ``default``: numpy scalars and arrays, and paths."""
    import numpy as np

    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2, sort_keys: bool = True,
               allow_nan: bool = True) -> Path:
    """Write ``obj`` as JSON atomically (numpy values and paths converted)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=jsonable, allow_nan=allow_nan)
    return write_text(path, text + "\n")


def save_npz(path: str | os.PathLike, arrays: Mapping[str, object]) -> Path:
    """``np.savez(path, **arrays)`` atomically."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    return write_with(path, write)


def publish_dir(work: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Rename the finished directory ``work`` to ``final``, replacing an old ``final``.

    ``os.replace`` cannot replace a non-empty directory, so an existing ``final`` is first
    renamed aside and deleted once the new one is in place: at every moment ``final`` is
    the old complete directory, absent for an instant, or the new complete one.
    """
    work, final = Path(work), Path(final)
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
        os.replace(work, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(work, final)
    return final


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``final`` (``.NAME.tmp-PID-*``, with the
    permissions of a normal ``mkdir``); publish it as ``final`` when the block ends
    normally, delete it when the block raises."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-{os.getpid()}-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it 0700; a server may run as another user
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    publish_dir(work, final)


def remove_stale(parent: str | os.PathLike) -> None:
    """Delete the ``.NAME.tmp-PID-*`` and ``.NAME.old-PID`` directories in ``parent``
    left by a process that no longer runs (killed while staging or publishing)."""
    for p in [*Path(parent).glob(".*.tmp-*"), *Path(parent).glob(".*.old-*")]:
        m = re.search(r"\.(?:tmp|old)-(\d+)", p.name)
        if not m or not p.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


__all__ = ["jsonable", "publish_dir", "remove_stale", "save_npz", "staging_dir", "write_bytes", "write_json",
           "write_text", "write_with"]
