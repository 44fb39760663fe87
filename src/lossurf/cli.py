"""The ``lossurf`` command: a thin typer layer over the library.

User errors (:class:`~lossurf.errors.LossurfError`) print one line and exit with code 2; an
interrupt exits with code 130 and a reminder that running the same command again resumes.

Only typer is imported here: torch, xarray and the rest load inside the command that needs
them, so ``lossurf --help`` (and every ``COMMAND --help``) answers in a fraction of a second.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from typer.core import TyperGroup

from lossurf.errors import EXIT_USER_ERROR, LossurfError


def _tidy_help(params: list) -> list:
    """Flags (``--progress/--no-progress``, ``--help``) show no ``<bool>`` value; arguments
    show their name in capitals (``EXP_DIR``), as the docstrings call them."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()
    return params


class _Group(TyperGroup):
    """A command group whose own help and its commands' help go through :func:`_tidy_help`;
    commands added later with ``@app.command()`` get it too."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        return _tidy_help(super().get_params(ctx))

    def get_command(self, ctx, cmd_name):  # type: ignore[no-untyped-def]
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, _Group):
            _tidy_help(command.get_params(ctx))
        return command


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Loss surfaces of deep networks: train with many optimizers from one initialization, "
    "then measure and draw the loss between the weights they reach.",
)


@contextmanager
def _resumable() -> Iterator[None]:
    """Turn Ctrl-C into exit code 130 and a reminder that the same command resumes."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("\ninterrupted; run the same command again to resume where it stopped", err=True)
        raise typer.Exit(130) from None


@app.callback()
def _root() -> None:
    """Loss surfaces of deep networks (see `lossurf COMMAND --help`)."""


_JOBS = typer.Option(
    1, "--jobs", "-j",
    help="Runs trained at once, each in its own worker process on this machine (1: one after "
    "the other, in this process); see docs/concurrency.md.",
)


def _check_jobs(jobs: int, backend: str = "local") -> None:
    """``--jobs`` is a positive count, and only for the local machine's worker processes."""
    if jobs < 1:
        raise LossurfError(f"--jobs must be at least 1, got {jobs}; pass how many runs to train "
                           "at once, e.g. --jobs 4 (1 trains them one after the other)")
    if jobs > 1 and backend != "local":
        raise LossurfError(f"--jobs runs worker processes on this machine and does not combine "
                           f"with --backend {backend} (Ray runs as many runs at once as its "
                           f"cluster has CPUs or GPUs for); drop --jobs or --backend {backend}")


@app.command()
def train(
    experiment: Path = typer.Argument(..., help="Experiment YAML file (see examples/digits.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Experiment directory to write (or resume); required unless --check."),
    run: Optional[list[str]] = typer.Option(None, "--run", help="Train only these runs (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Override data.data_dir."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the config's device: cpu, cuda, cuda:N or mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar per run."),
    backend: str = typer.Option("local", "--backend", help="Where runs train: local | ray (one task per run)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (auto or host:port)."),
    check: bool = typer.Option(False, "--check", help="Only check the file, data, model, optimizers and device; write nothing."),
    jobs: int = _JOBS,
) -> None:
    """Train every run of EXPERIMENT into OUT; running it again resumes what was interrupted."""
    from lossurf.config import load_config, parse_config

    _check_jobs(jobs, backend)
    config = load_config(experiment)
    overrides: dict = {}
    if data_dir is not None:
        overrides["data"] = {**config.data.model_dump(), "data_dir": data_dir}
    if device is not None:
        overrides["device"] = device
    if overrides:  # validated like the file's own fields (a bogus --device is named)
        config = parse_config({**config.model_dump(), **overrides}, "the command line")
    if check:
        from lossurf.checks import check_experiment

        typer.echo(check_experiment(config).summary())
        return
    if out is None:
        raise LossurfError("train needs --out DIR, the experiment directory to write (or --check to only validate)")

    from lossurf.devices import check_device
    from lossurf.engine import train_experiment
    from lossurf.progress import training_progress

    check_device(config.device)  # before anything is written: a bad device would be saved
    runner = None if backend == "local" else _backend(backend, address, config.device)
    with _resumable(), training_progress(progress) as report:
        statuses = train_experiment(
            config, out, runs=run, report=report, command=" ".join(sys.argv), backend=runner,
            jobs=jobs,
        )
    for name, status in statuses.items():
        detail = f" at epoch {status['diverged_epoch']}" if status["status"] == "diverged" else ""
        typer.echo(f"{name:<28} {status['status']}{detail}")
    typer.echo(f"results in {out}")


surface_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Loss and accuracy along lines, basins and planes.")
app.add_typer(surface_app, name="surface")

# Options shared by every surface command, defined once.
_BN = typer.Option("recompute", "--bn", help="Batch-norm statistics: recompute | interpolate | batch.")
_SUBSET = typer.Option(None, "--subset", help="Evaluate a fixed, seeded subset of N examples.")
_SPLIT = typer.Option("train", "--split", help="Data split to evaluate: train | test.")
_OUT = typer.Option(None, "--out", "-o", help="zarr store to write (default: EXP_DIR/surfaces/...).")
_DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:N or mps (default: the experiment's device).")
_BACKEND = typer.Option("local", "--backend", help="Where grid chunks run: local | ray.")
_ADDRESS = typer.Option(None, "--address", help="Ray cluster to join (auto or host:port).")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")


def _backend(name: str, address: Optional[str], device: str = "cpu"):
    """The backend of ``--backend``; Ray tasks reserve a GPU when the work runs on CUDA."""
    from lossurf.backends import make_backend

    if address is not None and name != "ray":
        raise LossurfError("--address only applies to --backend ray; add --backend ray")
    if name == "processes":  # it needs a worker count: that is what --jobs gives
        raise LossurfError("--backend takes local or ray; for runs trained at once in worker "
                           "processes, pass --jobs N to lossurf train or lossurf run")
    options: dict = {}
    if name == "ray":
        options = {"address": address, "num_gpus": 1 if device.startswith("cuda") else 0}
    return make_backend(name, **options)


def _surface_run(
    exp_dir: Path, endpoints: list[str], kind: str, out: Optional[Path], call, *,
    bn: str, subset: Optional[int], split: str, device: Optional[str], backend: str,
    address: Optional[str], progress: bool,
) -> None:
    """Resolve end points in an experiment, evaluate with ``call``, print where it went."""
    from lossurf.devices import check_device
    from lossurf.experiment import endpoint_attrs, load_experiment

    experiment = load_experiment(exp_dir)
    device = str(check_device(device or experiment.config.device))  # before the store is made
    points = [experiment.resolve(p) for p in endpoints]
    if out is None:
        safe = "-".join(p.label.replace(":", "_").replace("=", "") for p in points)
        out = experiment.path / "surfaces" / f"{kind}-{safe}-{split}.zarr"
    attrs = {"experiment": str(experiment.path), **endpoint_attrs(points)}
    with _resumable():
        result = call(
            experiment.model(), [p.weights for p in points], experiment.dataset(),
            bn=bn, subset=subset, split=split, store=out, attrs=attrs, device=device,
            backend=_backend(backend, address, device), progress=progress,
        )
    loss = result["loss"].values
    typer.echo(f"{kind}: {loss.size} points, loss {float(loss.min()):.4f} .. {float(loss.max()):.4f}")
    typer.echo(f"written to {out}")


@surface_app.command("line")
def surface_line(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    start: str = typer.Option(..., "--from", help="End point at alpha=0: init, RUN or RUN:epoch=N."),
    end: str = typer.Option(..., "--to", help="End point at alpha=1."),
    alpha_range: tuple[float, float] = typer.Option((-0.5, 2.0), "--range", help="Alpha range (extrapolates past 0 and 1)."),
    steps: int = typer.Option(51, "--steps", help="Number of alphas (at least 2)."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
    align: bool = typer.Option(False, "--align", help="Permute TO's hidden units into FROM's coordinates first (weight matching)."),
) -> None:
    """Loss along theta(alpha) = (1-alpha)*FROM + alpha*TO (paper eq. 2, Fig. 10)."""
    from lossurf import surface

    def call(model, weights, data, **kw):
        return surface.line(model, weights[0], weights[1], data, range=alpha_range, steps=steps,
                            align=align, **kw)

    _surface_run(exp_dir, [start, end], "line-aligned" if align else "line", out, call, bn=bn, subset=subset, split=split,
                 device=device, backend=backend, address=address, progress=progress)


@surface_app.command("basin")
def surface_basin(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    run: str = typer.Option(..., "--run", help="The minimum: RUN or RUN:epoch=N."),
    init: Optional[str] = typer.Option(None, "--init", help="Direction end point (default: the run's init)."),
    max_distance: Optional[float] = typer.Option(None, "--max-distance", help="Furthest distance (default 1.5x the init's)."),
    steps: int = typer.Option(41, "--steps", help="Number of distances (at least 2)."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
) -> None:
    """Loss at absolute distance lambda from a minimum toward and past its initialization (eq. 1)."""
    from lossurf import load_experiment, surface

    if init is None:
        experiment = load_experiment(exp_dir)
        init = experiment.init_label(experiment.seed_of(run.split(":", 1)[0]))

    def call(model, weights, data, **kw):
        return surface.basin(model, weights[0], weights[1], data, max_distance=max_distance, steps=steps, **kw)

    _surface_run(exp_dir, [run, init], "basin", out, call, bn=bn, subset=subset, split=split,
                 device=device, backend=backend, address=address, progress=progress)


@surface_app.command("plane")
def surface_plane(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    points: str = typer.Option(..., "--points", help="Comma-separated end points: 3 (barycentric, affine) or 4 (bilinear)."),
    kind: str = typer.Option("barycentric", "--kind", help="barycentric | bilinear | affine."),
    steps: int = typer.Option(21, "--steps", help="Grid points per axis (at least 2)."),
    margin: float = typer.Option(0.2, "--margin", help="Affine plane: margin past the triangle, as a fraction."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
    align: bool = typer.Option(False, "--align", help="Permute every point after the first into the first's coordinates (weight matching)."),
) -> None:
    """Loss over a plane through 3 or 4 end points (paper eqs. 3-8, Figs. 2-3, Table 1)."""
    from lossurf import surface

    names = [s.strip() for s in points.split(",")]
    if not all(names):
        raise LossurfError(f"--points {points!r} has an empty name; separate the end points with "
                           "single commas, e.g. --points init,sgd,adam")

    def call(model, weights, data, **kw):
        return surface.plane(model, weights, data, kind=kind, steps=steps, margin=margin,
                             align=align, **kw)

    _surface_run(exp_dir, names, f"{kind}-aligned" if align else kind, out, call, bn=bn, subset=subset, split=split,
                 device=device, backend=backend, address=address, progress=progress)


def _direction_run(
    exp_dir: Path, at: str, kind: str, out: Optional[Path], call, *, bn: str,
    subset: Optional[int], split: str, device: Optional[str], backend: str,
    address: Optional[str], progress: bool,
) -> None:
    """Evaluate a direction surface around end point AT with ``call``, print where it went."""
    from lossurf.devices import check_device
    from lossurf.experiment import endpoint_attrs, load_experiment

    experiment = load_experiment(exp_dir)
    device = str(check_device(device or experiment.config.device))
    point = experiment.resolve(at)
    if out is None:
        safe = point.label.replace(":", "_").replace("=", "")
        out = experiment.path / "surfaces" / f"{kind}-{safe}-{split}.zarr"
    attrs = {"experiment": str(experiment.path), **endpoint_attrs([point])}
    attrs["anchor_labels"] = [point.label]  # the center; the other anchors are center + s*d
    with _resumable():
        result = call(
            experiment, point, bn=bn, subset=subset, split=split, store=out, attrs=attrs,
            device=device, backend=_backend(backend, address, device), progress=progress,
        )
    loss = result["loss"].values
    typer.echo(f"{kind}: {loss.size} points, loss {float(loss.min()):.4f} .. {float(loss.max()):.4f}")
    for key in ("pca_explained_variance_ratio", "hessian_eigenvalues"):
        if key in result.attrs:
            typer.echo(f"{key.replace('_', ' ')}: {', '.join(f'{v:.4g}' for v in result.attrs[key])}")
    typer.echo(f"written to {out} (directions beside it: {out.name}.directions.safetensors)")


@surface_app.command("random")
def surface_random(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    at: str = typer.Option(..., "--at", help="The center: init, RUN, RUN:epoch=N or RUN@seedS."),
    dims: int = typer.Option(2, "--dims", help="1 (a line along d1) or 2 (a plane over d1, d2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random directions."),
    span: float = typer.Option(1.0, "--span", help="Coordinates run over [-span, span] (units of the directions)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Points per axis (default 21 for a plane, 51 for a line)."),
    normalization: str = typer.Option("filter", "--normalization", help="filter (Li et al.) | layer | none."),
    bias_bn: str = typer.Option("zero", "--bias-bn", help="1-D parameters (biases, BN weight/bias): zero (Li et al.) | keep."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
) -> None:
    """Loss around an end point along seeded random, filter-normalized directions (Li et al. 2018)."""
    from lossurf import surface

    if dims not in (1, 2):
        raise LossurfError(f"--dims must be 1 or 2, got {dims}")
    options = {"seed": seed, "span": span, "normalization": normalization, "bias_bn": bias_bn}

    def call(experiment, point, **kw):
        fn = surface.random_line if dims == 1 else surface.random_plane
        return fn(experiment.model(), point.weights, experiment.dataset(),
                  steps=steps or (51 if dims == 1 else 21), **options, **kw)

    kind = f"random{'-line' if dims == 1 else ''}-s{seed}-{normalization}"
    _direction_run(exp_dir, at, kind, out, call, bn=bn, subset=subset, split=split,
                   device=device, backend=backend, address=address, progress=progress)


@surface_app.command("pca")
def surface_pca(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    run: str = typer.Option(..., "--run", help="The run whose trajectory to use: RUN or RUN:epoch=N (the center)."),
    steps: int = typer.Option(21, "--steps", help="Points per axis (at least 2)."),
    margin: float = typer.Option(0.2, "--margin", help="Margin past the trajectory, as a fraction of its extent."),
    center: bool = typer.Option(False, "--center/--no-center", help="Subtract the mean before the SVD (sklearn's PCA)."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
) -> None:
    """Loss over the plane of a run's top two PCA directions, with its trajectory (Li et al. §7)."""
    from lossurf import surface

    def call(experiment, point, **kw):
        return surface.pca_plane(experiment.model(), experiment, experiment.dataset(), run=run,
                                 steps=steps, margin=margin, center=center, **kw)

    _direction_run(exp_dir, run, "pca" + ("-centered" if center else ""), out, call, bn=bn,
                   subset=subset, split=split, device=device, backend=backend, address=address,
                   progress=progress)


@surface_app.command("hessian")
def surface_hessian(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    at: str = typer.Option(..., "--at", help="The center: init, RUN, RUN:epoch=N or RUN@seedS."),
    span: float = typer.Option(1.0, "--span", help="Coordinates run over [-span, span]; 1 = the weights' norm."),
    steps: int = typer.Option(21, "--steps", help="Points per axis (at least 2)."),
    hessian_subset: Optional[int] = typer.Option(512, "--hessian-subset", help="Training examples the Hessian is computed on."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Lanczos start vector."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    device: Optional[str] = _DEVICE, backend: str = _BACKEND, address: Optional[str] = _ADDRESS,
    progress: bool = _PROGRESS,
) -> None:
    """Loss around an end point along the Hessian's top two eigenvectors (scaled to the weights' norm)."""
    from lossurf import surface

    def call(experiment, point, **kw):
        return surface.hessian_plane(experiment.model(), point.weights, experiment.dataset(),
                                     steps=steps, span=span, hessian_subset=hessian_subset,
                                     hessian_seed=seed, **kw)

    _direction_run(exp_dir, at, f"hessian-s{seed}", out, call, bn=bn, subset=subset, split=split,
                   device=device, backend=backend, address=address, progress=progress)


@app.command()
def distance(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    first: str = typer.Argument(..., help="End point: init, RUN or RUN:epoch=N."),
    second: str = typer.Argument(..., help="End point to compare with."),
    bn: str = _BN, subset: Optional[int] = _SUBSET,
    split: str = typer.Option("test", "--split", help="Data split (the paper uses validation data)."),
    device: Optional[str] = _DEVICE,
    align: bool = typer.Option(False, "--align", help="Also align SECOND to FIRST (weight matching) and print the weight-space distance before and after."),
) -> None:
    """Functional distance (paper eq. 4.1) and label disagreement between two end points."""
    from lossurf import load_experiment, surface
    from lossurf.devices import check_device

    experiment = load_experiment(exp_dir)
    device = str(check_device(device or experiment.config.device))
    a, b = experiment.resolve(first), experiment.resolve(second)
    result = surface.functional_distance(
        experiment.model(), a.weights, b.weights, experiment.dataset(), bn=bn, split=split,
        subset=subset, device=device,
    )
    typer.echo(f"functional distance  {result['fdist']:.6f}")
    typer.echo(f"label disagreement   {result['disagreement']:.6f}")
    if align:  # a permutation keeps the function: only the weight-space distance changes
        from lossurf.alignment import align as align_weights

        _, info = align_weights(experiment.model(), a.weights, b.weights)
        typer.echo(f"weight distance      {info.distance_before:.6f} raw, "
                   f"{info.distance_after:.6f} aligned ({info.iterations} matching passes, "
                   f"permutation sha256 {info.permutation_sha256[:12]})")


@app.command("align")
def align_command(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    first: str = typer.Argument(..., help="Reference end point: init, RUN, RUN:epoch=N or RUN@seedS."),
    second: str = typer.Argument(..., help="End point aligned to FIRST (weight matching)."),
    steps: int = typer.Option(25, "--steps", help="Alphas in [0, 1] on each line (at least 2)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the matching's layer order."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT, out: Optional[Path] = _OUT,
    figure: Optional[Path] = typer.Option(None, "--figure", help="Also draw both lines to this .png or .pdf."),
    device: Optional[str] = _DEVICE, progress: bool = _PROGRESS,
) -> None:
    """Loss barrier between two end points before and after permutation alignment."""
    from lossurf.alignment import compare_endpoints
    from lossurf.devices import check_device

    if device is not None:
        device = str(check_device(device))  # before the store is made
    if figure is not None and figure.suffix.lower() not in (".png", ".pdf"):
        raise LossurfError(f"figure file {figure} must end in .png or .pdf; rename it")
    if figure is not None:  # before the surfaces, not after
        from lossurf.runs import check_writable

        check_writable(figure.parent, "pass a --figure path you may write to")
    with _resumable():
        ds = compare_endpoints(exp_dir, first, second, store=out, steps=steps, seed=seed, bn=bn,
                               subset=subset, split=split, device=device, progress=progress)
    typer.echo(f"barrier {first} -> {second}: {ds.attrs['barrier_raw']:.4f} raw, "
               f"{ds.attrs['barrier_aligned']:.4f} aligned")
    typer.echo(f"weight distance {ds.attrs['alignment_distance_before'][0]:.4f} raw, "
               f"{ds.attrs['alignment_distance_after'][0]:.4f} aligned")
    if figure is not None:
        from lossurf.plots.alignment import save_alignment_figure

        typer.echo(f"figure: {save_alignment_figure(ds, figure)}")


@app.command("run")
def run_recipe_command(
    recipe: str = typer.Argument(..., help="optimizers | restarts | switching | batchnorm | init | runge-kutta | beyond | all"),
    preset: str = typer.Option("digits", "--preset", help="digits | cifar10 | cifar10-vgg | ptb, or the path of a preset YAML."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where CIFAR-10 / PTB files live."),
    out: Path = typer.Option(Path("runs/paper"), "--out", "-o", help="Output folder shared by every recipe."),
    lr_search: bool = typer.Option(False, "--lr-search", help="Pick each method's learning rate on held-out data first."),
    progress: bool = _PROGRESS,
    jobs: int = _JOBS,
) -> None:
    """Run one of the paper's experiments (or all) end to end: training, surfaces, claims."""
    from lossurf.analysis.claims import evaluate_claims
    from lossurf.experiments import run_all, run_recipe

    _check_jobs(jobs)
    with _resumable():
        if recipe == "all":
            run_all(preset, out, data_dir=data_dir, lr_search=lr_search, progress=progress, jobs=jobs)
        else:
            run_recipe(recipe, preset, out, data_dir=data_dir, lr_search=lr_search,
                       progress=progress, jobs=jobs)
            evaluate_claims(out)
    typer.echo(f"results in {out}; draw them with: lossurf report {out}")


@app.command()
def report(
    out: Path = typer.Argument(..., help="Output folder of `lossurf run` or `lossurf demo`."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", help="Figures drawn at once, in worker processes (default: the "
        "usable cores)."),
) -> None:
    """Draw every figure of the recipes in OUT and write OUT/report.html."""
    from lossurf.report import write_report

    if jobs is not None and jobs < 1:
        raise LossurfError(f"--jobs must be at least 1, got {jobs}; pass how many figures to "
                           "draw at once, e.g. --jobs 2, or leave it out to use every usable core")
    if out.is_dir():
        from lossurf.runs import check_writable

        check_writable(out, "the report and its figures are written there: make it writable, "
                            "or copy the folder somewhere you may write and report the copy")
    typer.echo(f"report: {write_report(out, jobs=jobs)}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder."),
    progress: bool = _PROGRESS,
    preset: str = typer.Option("digits", "--preset", help="digits, or the path of a preset YAML (e.g. a smaller demo)."),
    jobs: int = _JOBS,
) -> None:
    """Every recipe on the digits preset, the reproduction claims, and report.html."""
    from lossurf.demo import demo as run_demo

    _check_jobs(jobs)
    with _resumable():
        path = run_demo(out, progress=progress, preset=preset, jobs=jobs)
    typer.echo(f"report: {path}")


@app.command()
def plot(
    store: Path = typer.Argument(..., help="A surface zarr store (of `lossurf surface`, a recipe or the API)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Figure file: .png, .pdf or .html (default: STORE with .png)."),
) -> None:
    """Draw a surface store: a line or basin profile, or a plane as 3-D surface and contour."""
    from lossurf.plots import plot_store

    typer.echo(f"figure: {plot_store(store, out)}")


@app.command()
def hessian(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    runs: list[str] = typer.Argument(..., help="End points: init, RUN, RUN:epoch=N, RUN@seedS (one row each)."),
    top: int = typer.Option(5, "--top", help="Number of top eigenpairs (Lanczos); 0 for none."),
    trace: bool = typer.Option(False, "--trace", help="Estimate the trace (Hutchinson)."),
    density: bool = typer.Option(False, "--density", help="Estimate the eigenvalue density (SLQ)."),
    sharpness: Optional[list[float]] = typer.Option(None, "--sharpness", help="Keskar eps-sharpness at this eps (repeatable; default 1e-3; 0 for none)."),
    tol: float = typer.Option(1e-4, "--tol", help="Lanczos relative residual tolerance."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random start vector and probe."),
    subset: Optional[int] = typer.Option(512, "--subset", help="Fixed, seeded subset of N training examples."),
    split: str = _SPLIT, out: Optional[Path] = typer.Option(None, "--out", "-o", help="zarr store (default: EXP_DIR/hessian/...); with several end points, a folder of stores."),
    device: Optional[str] = _DEVICE,
) -> None:
    """Hessian of the loss at end points: top eigenvalues, trace, density, eps-sharpness, basin width."""
    from lossurf import hessian as hess
    from lossurf.experiment import endpoint_attrs, load_experiment
    from lossurf.hessian.table import comparison_rows, format_table

    from lossurf.devices import check_device
    from lossurf.surface.store import open_surface

    experiment = load_experiment(exp_dir)
    device = str(check_device(device or experiment.config.device))  # before a store is made
    points = [experiment.resolve(r) for r in runs]
    eps = [e for e in (sharpness or [1e-3]) if e != 0]
    results, basins = {}, {}
    for point in points:
        safe = point.label.replace(":", "_").replace("=", "")
        name = f"hessian-{safe}-{split}-n{subset or 'all'}.zarr"
        store = (out if len(points) == 1 else out / name) if out is not None else (
            experiment.path / "hessian" / name)
        with _resumable():
            results[point.label] = hess.analyze(
                experiment.model(), point.weights, experiment.dataset(), top=top or None,
                tol=tol, trace=trace, density=density, sharpness=eps, seed=seed,
                split=split, subset=subset or None, device=device, store=store,
                attrs={"experiment": str(experiment.path), **endpoint_attrs([point])})
        init = experiment.init_label(experiment.seed_of(point.run)) if point.checkpoint != "init" else None
        basin = experiment.path / "surfaces" / f"basin-{safe}-{init}-{split}.zarr"
        if init is not None and basin.is_dir():
            basins[point.label] = open_surface(basin).load()
        typer.echo(f"{point.label}: written to {store}")
    typer.echo(format_table(comparison_rows(results, basins)))


@app.command()
def curve(
    exp_dir: Path = typer.Argument(..., help="Experiment directory written by `lossurf train`."),
    start: str = typer.Argument(..., help="End point at t=0: init, RUN, RUN:epoch=N, RUN@seedS."),
    end: str = typer.Argument(..., help="End point at t=1."),
    kind: str = typer.Option("bezier", "--kind", help="bezier (quadratic Bezier) | chain (polygonal chain)."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs of training the curve's bend."),
    lr: float = typer.Option(0.05, "--lr", help="Learning rate of the bend's optimizer."),
    optimizer: str = typer.Option("sgdm", "--optimizer", help="Optimizer of the bend (any lossurf optimizer name)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Minibatch size (default: the experiment's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of batch order and t draws (default: the experiment's first)."),
    steps: int = typer.Option(21, "--steps", help="Evaluated t values in [0, 1] (at least 2)."),
    bn: str = _BN, subset: Optional[int] = _SUBSET, split: str = _SPLIT,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Curve folder (default: EXP_DIR/curves/A-B-KIND)."),
    device: Optional[str] = _DEVICE, progress: bool = _PROGRESS,
) -> None:
    """Low-loss curve between two end points (Garipov et al. 2018) against the straight line."""
    from lossurf.curves import experiment_curve
    from lossurf.devices import check_device

    if device is not None:
        device = str(check_device(device))  # before the curve's folder is made

    def report(epoch: int, loss: float) -> None:
        if progress:
            typer.echo(f"epoch {epoch}/{epochs}: mean loss along the curve {loss:.4f}", err=True)

    with _resumable():
        result = experiment_curve(
            exp_dir, start, end, kind=kind, epochs=epochs, lr=lr, optimizer=optimizer,
            batch_size=batch_size, seed=seed, steps=steps, bn=bn, split=split, subset=subset,
            out=out, device=device, progress=progress, on_epoch=report,
        )
    ds = result.dataset
    typer.echo(f"{kind} curve {start} -> {end}: {'trained' if result.trained else 'reused'} "
               f"({epochs} epochs)")
    typer.echo(f"max loss along the curve {ds.attrs['loss_max']:.4f}, "
               f"along the straight line {ds.attrs['loss_line_max']:.4f}")
    typer.echo(f"written to {result.store}")


def main() -> None:
    """Entry point of the ``lossurf`` console script."""
    try:
        app()
    except LossurfError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
