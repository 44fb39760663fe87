"""Redraw only what changed: a figure's inputs and drawing code, fingerprinted.

A figure is redrawn when its fingerprint differs from the one recorded at its last drawing in
``OUT/figures/drawn.json``, or when one of its files is gone. The fingerprint covers the figure
spec, the contents of every file the spec names (surface stores, tables, the metrics CSV of
each run of a ``curves`` figure) and the source of :mod:`lossurf.plots`, so a rerun of
``lossurf demo`` with nothing new redraws nothing, and a new drawing code redraws everything.
Contents are hashed (not mtimes): a recipe that rewrites a store with the same values does
not cost a redraw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lossurf.runs import write_json

if TYPE_CHECKING:
    from lossurf.experiments.result import FigureSpec, RecipeResult
    from lossurf.plots.draw import DrawnFigure

__all__ = ["FigureCache", "fingerprint", "drawing_code_version"]

#: Bump when the cache file's layout changes.
_FORMAT = 1


@lru_cache(maxsize=1)
def drawing_code_version() -> str:
    """A hash of every source file of :mod:`lossurf.plots` (and of this report's version)."""
    import lossurf
    import lossurf.plots

    digest = hashlib.sha256(f"{lossurf.__version__}/{_FORMAT}".encode())
    for path in sorted(Path(lossurf.plots.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def input_files(spec: "FigureSpec", result: "RecipeResult") -> list[Path]:
    """Every file a figure reads: paths named in its data, and the metrics of its runs."""
    named: set[Path] = set()
    for text in _strings(spec.data):
        if "/" in text or text.endswith((".zarr", ".csv")):
            path = result.path(text)
            if path.exists():
                named.add(path)
    for series in spec.data.get("series", []) if isinstance(spec.data, dict) else []:
        if isinstance(series, dict) and "experiment" in series and "run" in series:
            experiment = result.experiments.get(str(series["experiment"]))
            if experiment is not None:
                named.add(result.path(experiment) / "runs" / str(series["run"]) / "metrics.csv")
    files: list[Path] = []
    for path in sorted(named):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def fingerprint(spec: "FigureSpec", result: "RecipeResult") -> str:
    """The hash of a figure's spec, the contents of its input files and the drawing code."""
    digest = hashlib.sha256(drawing_code_version().encode())
    digest.update(json.dumps(asdict(spec), sort_keys=True, default=str).encode())
    for path in input_files(spec, result):
        digest.update(str(path.relative_to(result.root) if path.is_relative_to(result.root)
                          else path).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")  # the drawer will say what is wrong
    return digest.hexdigest()


class FigureCache:
    """``OUT/figures/drawn.json``: each drawn figure's fingerprint and what draw() returned."""

    def __init__(self, figures_dir: Path) -> None:
        self.dir = Path(figures_dir)
        self.path = self.dir / "drawn.json"
        self.entries: dict[str, dict] = {}
        try:
            payload = json.loads(self.path.read_text())
            if payload.get("format") == _FORMAT:
                self.entries = dict(payload.get("figures", {}))
        except (OSError, ValueError, AttributeError):
            pass  # no record, or a damaged one: everything is drawn again
        self.redrawn: list[str] = []

    def get(self, key: str, print_: str) -> "DrawnFigure | None":
        """The recorded drawing of ``key`` if its fingerprint is ``print_`` and its files exist."""
        from lossurf.plots.draw import DrawnFigure, DrawnPart

        entry = self.entries.get(key)
        if not entry or entry.get("fingerprint") != print_:
            return None
        def here(name: str) -> Path:
            # a file name, found in this figures folder: the folder may have been moved, or
            # named another way (relative, absolute) since; records before names held paths
            return self.dir / Path(name).name

        try:
            drawn = DrawnFigure(
                png=here(entry["png"]), pdf=here(entry["pdf"]),
                html_fragment=entry.get("html_fragment"), clipped=dict(entry["clipped"]),
                notes=list(entry["notes"]), width_in=float(entry["width_in"]),
                parts=[DrawnPart(p["title"], here(p["png"]), here(p["pdf"]), float(p["width_in"]))
                       for p in entry["parts"]])
        except (KeyError, TypeError, ValueError):
            return None
        files = [drawn.png, drawn.pdf] + [f for p in drawn.parts for f in (p.png, p.pdf)]
        return drawn if all(f.is_file() for f in files) else None

    def put(self, key: str, print_: str, drawn: "DrawnFigure") -> None:
        """Record a fresh drawing of ``key``."""
        entry = asdict(drawn)
        entry["fingerprint"] = print_
        # file names only (draw() writes every file into this folder), see get()
        entry["png"], entry["pdf"] = drawn.png.name, drawn.pdf.name
        for part, recorded in zip(drawn.parts, entry["parts"]):
            recorded["png"], recorded["pdf"] = part.png.name, part.pdf.name
        self.entries[key] = json.loads(json.dumps(entry, default=str))
        self.redrawn.append(key)

    def forget(self, key: str) -> None:
        """Drop ``key`` (its drawing failed: try again next time)."""
        self.entries.pop(key, None)

    def save(self, keep: set[str]) -> None:
        """Write the record of the figures in ``keep`` (others no longer exist)."""
        figures = {k: v for k, v in self.entries.items() if k in keep}
        for entry in figures.values():  # a record with paths is rewritten with names
            for item in [entry, *entry.get("parts", [])]:
                for ext in ("png", "pdf"):
                    if isinstance(item.get(ext), str):
                        item[ext] = Path(item[ext]).name
        write_json(self.path, {"format": _FORMAT, "figures": figures})
