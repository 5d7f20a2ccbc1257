"""Where the studio may look: ``output_root`` and the data folders named when it started.

Every path a page sends goes through :meth:`Roots.inside`: it is resolved (symbolic links
followed, ``..`` collapsed) and must then lie under one of the roots, else :class:`PathRefused`
(403). Names of runs and sweeps are plain folder names, never paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from f5app.errors import UserError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]{0,127}$")


class PathRefused(UserError):
    """A path outside every root the studio was started with."""


@dataclass(frozen=True)
class Roots:
    output_root: Path
    data_roots: tuple[Path, ...] = ()

    @classmethod
    def of(cls, output_root: str | Path, data_roots: list[str] | tuple[str, ...] = ()) -> "Roots":
        return cls(Path(output_root).expanduser().resolve(), tuple(Path(p).expanduser().resolve() for p in data_roots))

    @property
    def runs(self) -> Path:
        return self.output_root / "runs"

    @property
    def sweeps(self) -> Path:
        return self.output_root / "sweeps"

    @property
    def studio(self) -> Path:
        """The studio's own files: job logs, comparisons, exports."""
        return self.output_root / "studio"

    def inside(self, path: str | Path, *, data: bool = True) -> Path:
        """``path`` resolved; :class:`PathRefused` unless it lies under output_root (or a data root when ``data``)."""
        if not isinstance(path, (str, Path)) or not str(path) or "\x00" in str(path):
            raise PathRefused("no path given")
        given = Path(path).expanduser()
        resolved = (given if given.is_absolute() else self.output_root / given).resolve()
        roots = (self.output_root, *self.data_roots) if data else (self.output_root,)
        if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
            raise PathRefused(f"{path} is outside the folders this studio serves ({', '.join(str(r) for r in roots)})")
        return resolved

    def in_data(self, path: str | Path) -> Path:
        """A data folder: under a data root (or output_root), and an existing directory."""
        resolved = self.inside(path)
        if not resolved.is_dir():
            raise PathRefused(f"{path} is not a folder")
        return resolved

    def run_dir(self, name: str, *, sweep: str | None = None) -> Path:
        """``output_root/runs/NAME`` (or ``output_root/sweeps/SWEEP/NAME``); NAME is a folder name, never a path."""
        for part in (name, sweep) if sweep is not None else (name,):
            if not isinstance(part, str) or not _NAME.match(part):
                raise PathRefused(f"{part!r} is not a run name (letters, digits and _.=,+- only)")
        folder = (self.sweeps / sweep / name) if sweep is not None else (self.runs / name)
        return self.inside(folder, data=False)


def valid_name(name: str) -> bool:
    return isinstance(name, str) and bool(_NAME.match(name))
