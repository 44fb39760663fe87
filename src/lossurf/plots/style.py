"""Readable defaults for every figure: fonts, sizes, axis labels and one colour per optimizer.

Figures are meant to be read at their natural size (the report shows them at 100 px per inch),
so fonts are >= 10 pt and figures are at most ~11 in wide. Settings apply only inside
:func:`style` (``matplotlib.rc_context``), never globally, and figures are built on
``matplotlib.figure.Figure`` directly, without pyplot, so no backend state is touched.

Colours are a fixed map from optimizer names to colours, so ``adam`` is the same red in every
figure of every recipe. Labels are normalised first (``adam@seed1``, ``Adam:epoch=10`` map to
``adam``); switch runs (``sgd-to-adam-50``) mix the colours of their two methods; anything
else gets a colour derived from a hash of its name (stable across runs and processes).

Beyond the colour, :func:`series_style` tells series apart that share a method: the seed picks
the line style (seed 0 solid, 1 dashed, 2 dotted, 3 dash-dot), a switch point picks a marker
(25 % circle, 50 % square, 75 % triangle), and a run without batch norm gets a lighter colour,
a dashed line (where the seed leaves the style free) and hollow triangles.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import matplotlib

from matplotlib.colors import to_hex, to_rgb

__all__ = [
    "RC",
    "DPI",
    "OPTIMIZER_COLORS",
    "CLIP_COLOR",
    "style",
    "color_for",
    "axis_label",
    "new_figure",
    "SeriesStyle",
    "series_style",
]

DPI = 150

#: rc settings applied inside :func:`style`; fonts >= 10 pt so figures read without zooming.
RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "figure.titlesize": 13,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.1,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays selectable and editable
    "text.usetex": False,
}

#: One colour per method; Runge-Kutta forms are shades near their base, switches are mixes.
OPTIMIZER_COLORS: dict[str, str] = {
    "sgd": "#1f77b4",
    "sgdm": "#17becf",
    "rmsprop": "#9467bd",
    "adadelta": "#2ca02c",
    "adam": "#d62728",
    "adagrad": "#8c564b",
    "rk2": "#ff7f0e",
    "rk2-midpoint": "#ff7f0e",
    "rk2-heun": "#bcbd22",
    "rk2-ralston": "#e377c2",
    "rk2-euler": "#7f7f7f",
    "adam+rk2": "#7f0000",
    "adam+rk2-heun": "#7f0000",
    "adam+rk2-midpoint": "#b35806",
    "adam+rk2-ralston": "#9e0142",
    "init": "#000000",
}
#: Marker colour of clipped (divergent, infinite, NaN) points in every figure.
CLIP_COLOR = "#000000"

_FALLBACK = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
             "#31a354", "#756bb1", "#636363", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b"]
_SWITCH = re.compile(r"^(?P<a>.+?)-to-(?P<b>.+?)(?:-(?P<p>\d+))?$")
_SUFFIX = re.compile(r"(@seed\d+|:epoch=\d+)$")

#: Axis labels with units, by coordinate or column name.
AXIS_LABELS = {
    "alpha": "α (interpolation coefficient)",
    "beta": "β (interpolation coefficient)",
    "lambda": "distance in weight space from the minimum",
    "x": "distance in weight space (plane x)",
    "y": "distance in weight space (plane y)",
    "epoch": "epoch",
    "gradient_evaluations": "gradient evaluations",
    "loss": "loss (cross-entropy)",
    "train_loss": "train loss (cross-entropy)",
    "test_loss": "test loss (cross-entropy)",
    "batch_loss": "minibatch loss (cross-entropy)",
    "accuracy": "accuracy (fraction correct)",
    "train_accuracy": "train accuracy (fraction)",
    "test_accuracy": "test accuracy (fraction)",
    "perplexity": "perplexity",
    "train_perplexity": "train perplexity",
    "test_perplexity": "test perplexity",
    "fdist": "functional distance (RMS of softmax diff.)",
    "disagreement": "label disagreement (fraction)",
    "distance_from_init": "distance from initialization ‖θ − θ₀‖",
    "wall_time": "wall time (s)",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply :data:`RC` for the duration of a ``with`` block (no global state is left)."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(width: float, height: float):
    """A pyplot-free ``Figure`` of ``width`` x ``height`` inches with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def axis_label(name: str) -> str:
    """A readable label with units for a coordinate or metrics column (the name otherwise)."""
    return AXIS_LABELS.get(name, name.replace("_", " "))


def _normalise(label: str) -> str:
    key = str(label).strip().lower().replace(" ", "")
    while True:
        stripped = _SUFFIX.sub("", key)
        if stripped == key:
            return key
        key = stripped


def _mix(a: str, b: str, weight_a: float) -> str:
    ra, rb = to_rgb(a), to_rgb(b)
    return to_hex(tuple(weight_a * x + (1 - weight_a) * y for x, y in zip(ra, rb)))


def _darken(color: str, factor: float = 0.6) -> str:
    return to_hex(tuple(factor * c for c in to_rgb(color)))


def color_for(label: str) -> str:
    """The fixed colour of a method label, identical in every figure.

    Args:
        label: an optimizer or run name (``adam``, ``adam@seed2``, ``rk2-heun``,
            ``sgd-to-adam-50``, ``sgd-2xlr``).

    Returns:
        A hex colour: the map's entry; for ``A-to-B-p`` a mix of A and B weighted by how long
        A ran; for a known method followed by other text (``sgd-2xlr``) a darker shade of it;
        otherwise a colour picked by a hash of the label (stable across processes).
    """
    key = _normalise(label)
    if key in OPTIMIZER_COLORS:
        return OPTIMIZER_COLORS[key]
    match = _SWITCH.match(key)
    if match and match["a"] in OPTIMIZER_COLORS and match["b"] in OPTIMIZER_COLORS:
        share = int(match["p"]) / 100 if match["p"] else 0.5
        return _mix(OPTIMIZER_COLORS[match["a"]], OPTIMIZER_COLORS[match["b"]], share)
    if "+rk2" in key and key.split("+", 1)[0] in OPTIMIZER_COLORS:
        return _darken(OPTIMIZER_COLORS[key.split("+", 1)[0]], 0.5)
    for name in sorted(OPTIMIZER_COLORS, key=len, reverse=True):
        if key.startswith(name) and not key[len(name):len(name) + 1].isalnum():
            return _darken(OPTIMIZER_COLORS[name])
    digest = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return _FALLBACK[digest % len(_FALLBACK)]


#: Line style per seed (index = seed modulo the length).
SEED_LINESTYLES: tuple = ("-", "--", ":", "-.")
#: Marker per switch point (percentage of epochs on the first method); others get "D".
SWITCH_MARKERS = {25: "o", 50: "s", 75: "^"}
#: Marker of runs without batch norm (drawn hollow).
NO_BN_MARKER = "v"

_SEED = re.compile(r"\s*(?:@seed\s*(\d+)|\(\s*seed\s*(\d+)\s*\)|,?\s*\bseed\s*(\d+))", re.I)
_NO_BN = re.compile(r",?\s*\b(?:without\s+(?:bn|batch[ -]?norm)|no[- ]?bn|bn\s*=\s*false)\b", re.I)
_WITH_BN = re.compile(r",?\s*\b(?:with\s+(?:bn|batch[ -]?norm)|bn)\b", re.I)
_ARROW = re.compile(r"^\s*(?P<a>[\w+.-]+)\s*->\s*(?P<b>[\w+.-]+)(?P<rest>(?:\s.*)?)$")
_PERCENT = re.compile(r"(\d+)\s*%|-to-.+-(\d+)(?:@|$)")


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn: its colour, line style and marker (None: no marker).

    ``linestyle`` is None when nothing in the series fixes it (the caller may then pick one
    per group).
    """

    color: str
    linestyle: Any | None = None
    marker: str | None = None
    hollow: bool = False

    def kwargs(self, points: int, default_linestyle: Any = "-") -> dict[str, Any]:
        """``ax.plot`` keyword arguments; markers on about 8 of ``points`` points."""
        out: dict[str, Any] = {"color": self.color,
                               "ls": self.linestyle if self.linestyle is not None
                               else default_linestyle}
        if self.marker:
            out.update(marker=self.marker, markevery=max(1, points // 8), markersize=6)
            if self.hollow:
                out.update(markerfacecolor="white", markeredgecolor=self.color, mew=1.4)
        return out


def _lighten(color: str, share: float = 0.5) -> str:
    return _mix("#ffffff", color, share)


def series_style(label: str, group: str = "") -> SeriesStyle:
    """The style of a series: method colour, seed line style, switch marker, BN variant.

    Args:
        label: the series label (``sgd (seed 1)``, ``adam@seed0``, ``sgd -> adam at 25%``,
            ``N(-1, 1), without BN``).
        group: its group, which may carry the batch-norm variant (``sgd, no-bn``).

    Returns:
        A :class:`SeriesStyle`; two series that differ only in seed, switch point or batch
        norm never get the same one.
    """
    text = str(label)
    seed = None
    match = _SEED.search(text)
    if match:
        seed = int(next(g for g in match.groups() if g is not None))
        text = _SEED.sub("", text)
    context = f"{text} {group}"
    no_bn = bool(_NO_BN.search(context))
    text = _WITH_BN.sub("", _NO_BN.sub("", text)).strip(" ,")
    text = re.sub(r"\s+only$", "", text)  # "sgd only" (Fig. 7) is the sgd run
    marker = None
    arrow = _ARROW.match(text)
    if arrow:  # "a -> b at p%", "a -> b after epoch 5 (p%)": the colour of run a-to-b-p
        share = re.search(r"(\d+)\s*%", arrow["rest"])
        text = f"{arrow['a']}-to-{arrow['b']}" + (f"-{share.group(1)}" if share else "")
    percent = _PERCENT.search(text)
    if percent:
        marker = SWITCH_MARKERS.get(int(next(g for g in percent.groups() if g)), "D")
    color = color_for(text or str(label))
    linestyle = SEED_LINESTYLES[seed % len(SEED_LINESTYLES)] if seed is not None else None
    if no_bn:
        color = _lighten(_darken(color, 0.85), 0.55)
        if linestyle is None:
            linestyle = (0, (6, 2, 1, 2))  # dash-dot-ish: distinct from every seed style
        return SeriesStyle(color, linestyle, marker or NO_BN_MARKER, hollow=True)
    return SeriesStyle(color, linestyle, marker)
