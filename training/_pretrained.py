"""Where a pretrained model lives: a local Hugging Face directory or a GGUF file, never a hub.

``train.model.local_path`` names either a directory holding ``config.json`` (a
``save_pretrained`` checkpoint) or a ``.gguf`` file, which transformers
dequantizes on load (with the ``gguf`` package). Anything else, a hub id in
particular, is refused before any work: exante fetches nothing, so a model
enters a project as a file its owner put there, like every other source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lineage.errors import ParamsError


@dataclass(frozen=True)
class Pretrained:
    """What ``from_pretrained`` needs: a directory and, for GGUF, the file's name in it."""

    directory: Path
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        return {"local_files_only": True, **extra}


def locate(local_path: str) -> Pretrained:
    """The local checkpoint ``local_path`` names, or a ParamsError saying how to make one."""
    path = Path(local_path)
    if path.suffix == ".gguf" and path.is_file():
        return Pretrained(path.parent, path.name)
    if (path / "config.json").is_file():
        return Pretrained(path)
    what = (
        "does not exist"
        if not path.exists()
        else "is neither a .gguf file nor a directory with config.json"
    )
    raise ParamsError(
        f"train.model.local_path {local_path!r} {what}. exante loads models only from local "
        "files and never downloads: if this is a hub id, fetch it yourself (e.g. `hf download "
        f"{local_path} --local-dir models/pretrained`, or save_pretrained from a session that "
        "has it) and set train.model.local_path to that directory, or to a .gguf file"
    )
