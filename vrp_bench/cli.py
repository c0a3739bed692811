"""The ``vrp-bench`` command line (click). Commands stay thin: parse, call the library, print.

``vrp-bench --model M --tasks T`` is shorthand for ``vrp-bench run --model M --tasks T``. Flags
use lmms-eval's spellings (``--model_args``, ``--include_path``, ...); dashed aliases also work.
Exit codes: 0 success, 2 usage error, 1 runtime failure; errors are printed as one line.
"""

from __future__ import annotations

import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import vrp_bench
from vrp_bench.api.errors import UsageError, VRPError

if TYPE_CHECKING:
    from vrp_bench.interventions import AblationSettings

log = logging.getLogger("vrp_bench")
_show_tracebacks = False


class LimitType(click.ParamType):
    """``--limit``: a number of docs (int >= 1) or a fraction of them (0 < float < 1)."""

    name = "limit"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of docs (>= 1) or a fraction (0 < x < 1)", param, ctx)
        if number >= 1 and number.is_integer():
            return int(number)
        if 0 < number < 1:
            return number
        self.fail(f"{value!r} must be a whole number >= 1 or a fraction between 0 and 1", param, ctx)


class DefaultRunGroup(click.Group):
    """A group where options given without a command mean ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _load_registries() -> None:
    from vrp_bench.builtins import register_builtins

    register_builtins()


@click.group(cls=DefaultRunGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(vrp_bench.__version__, prog_name="vrp-bench")
def cli() -> None:
    """VRP-Bench: how well do a VLM's reliability signals predict whether its answers are right?"""


# Scoring flag -> ScoringSettings field.
_SCORING_FIELDS = {"probe_kind": "probe_kind", "bootstrap_resamples": "n_resamples", "cv_repeats": "repeats",
                   "permutations": "permutations", "equivalence_margin": "equivalence_margin",
                   "attention_classifier": "attention_classifier"}


def _scoring_options(rescoring: bool) -> list[Any]:
    """The flags that set ``ScoringSettings``: defaults for a run; for ``score`` none (the run's settings)."""
    from vrp_bench.scoring.settings import ATTENTION_CLASSIFIERS, ScoringSettings

    defaults = ScoringSettings()

    def option(flag: str, kind: Any, field: str, text: str) -> Any:
        default = None if rescoring else getattr(defaults, field)
        spellings = dict.fromkeys((f"--{flag}", f"--{flag.replace('_', '-')}"))  # one when there is no "_"
        return click.option(*spellings, flag, type=kind, default=default,
                            show_default=not rescoring, help=text + (" (default: the run's)" if rescoring else ""))

    return [
        option("probe_kind", click.Choice(["logistic", "mlp", "l1"]), "probe_kind", "Hidden-state probe."),
        option("attention_classifier", click.Choice(ATTENTION_CLASSIFIERS), "attention_classifier",
               "Attention-only classifier of the stress test (gbt: gradient-boosted trees, about 100x the CPU "
               "time of logistic under the permutation test)."),
        option("bootstrap_resamples", click.IntRange(min=100), "n_resamples",
               "Bootstrap resamples for every confidence interval."),
        option("cv_repeats", click.IntRange(min=1), "repeats",
               "Repeated cross-validation seeds of probes, fusion and attention classifiers (their CIs include "
               "retraining)."),
        option("permutations", click.IntRange(min=0), "permutations",
               "Within-task label permutations of the probe / fusion / attention-classifier permutation test "
               "(0 skips it)."),
        option("equivalence_margin", click.FloatRange(min=0, max=0.5, min_open=True), "equivalence_margin",
               "Verdicts: \"no relation\" means within-task AUROC inside 0.5 +/- this."),
    ]


def _scoring_settings(options: dict[str, Any], base: Any) -> Any:
    """``base`` (ScoringSettings) with every scoring flag that was given."""
    from dataclasses import replace

    return replace(base, **{field: options[flag] for flag, field in _SCORING_FIELDS.items()
                            if options.get(flag) is not None})


_RUN_OPTIONS = [
    click.option("--model", required=True, help="Registered model name (see `vrp-bench models`)."),
    click.option("--model_args", "--model-args", "model_args", default="", help="k=v,k=v passed to the model."),
    click.option("--tasks", required=True, help="Task/group names, comma lists, wildcards, `all`, or `list`."),
    click.option("--include_path", "--include-path", "include_paths", multiple=True, type=click.Path(path_type=Path),
                 help="Extra folder of task YAMLs (repeatable)."),
    click.option("--dataset_path_override", "--dataset-path-override", "dataset_path_overrides", multiple=True,
                 metavar="DATASET_PATH=LOCAL_PATH",
                 help="Read a task's dataset from a local folder or file instead of its YAML's dataset_path, without "
                      "editing the YAML (repeatable; also the VRP_DATASET_PATH_OVERRIDE environment variable, "
                      "comma-separated)."),
    click.option("--limit", type=LimitType(), default=None, help="First N docs per task, or a fraction."),
    click.option("--batch_size", "--batch-size", "batch_size", type=click.IntRange(min=1), default=1,
                 show_default=True),
    click.option("--device", default=None, help="Device for the model: auto (cuda, else mps, else cpu; the "
                                                "default), cpu, cuda, cuda:N or mps."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice of the run."),
    click.option("--output_path", "--output-path", "output_path", type=click.Path(path_type=Path), default=None,
                 help="Folder for results; files go to <output_path>/<model>/."),
    click.option("--log_samples", "--log-samples", "log_samples", is_flag=True,
                 help="Also write per-sample JSONL (and, with ablations, per-condition JSONL)."),
    click.option("--gen_kwargs", "--gen-kwargs", "gen_kwargs", default="",
                 help="k=v overriding every task's generation_kwargs."),
    click.option("--max_failed_share", "--max-failed-share", "max_failed_share",
                 type=click.FloatRange(min=0, max=1, max_open=True), default=None,
                 help="End the run (exit 1, nothing written) when a task's share of failed docs exceeds this "
                      "[default: only when every doc of a task failed]."),
    click.option("--cache_dir", "--cache-dir", "cache_dir", type=click.Path(path_type=Path), default=None,
                 help="Keep finished samples here and reuse them on a re-run of the same model, task, docs and "
                      "settings [default: <output_path>/<model>/cache; none without --output_path]."),
    click.option("--no_cache", "--no-cache", "no_cache", is_flag=True,
                 help="Neither reuse nor keep finished samples."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="CPU threads for the model [default: the idle cores, or OMP_NUM_THREADS]."),
    click.option("--sc_samples", "--sc-samples", "sc_samples", type=click.IntRange(min=0), default=None,
                 help="Self-consistency samples per doc (0 disables); same as --model_args sc_samples=K."),
    click.option("--save_traces", "--save-traces", "save_traces", is_flag=True,
                 help="Also write hidden states (float16) and attention maps (float32), an .npz per task, for "
                      "re-scoring probes and the ensemble attention probe later, and the run report's heatmaps."),
    click.option("--plots", is_flag=True,
                 help="Then draw the run's pictures and report.html into <run folder>/plots/ (implies --log_samples "
                      "and --save_traces; see `vrp-bench plot`)."),
    *_scoring_options(rescoring=False),
    click.option("--verbosity", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                 default="INFO", show_default=True),
]

_ABLATION_OPTIONS = [
    click.option("--layer", default="probe", show_default=True,
                 help="Decoder layer to ablate: `probe` (the held-out probe's most predictive layer), N, or `all` "
                      "(per-layer sensitivity sweep)."),
    click.option("--ablation_space", "--ablation-space", "ablation_space", type=click.Choice(["residual", "mlp"]),
                 default="residual", show_default=True,
                 help="Destroy residual-stream dimensions (layer output) or MLP intermediate neurons."),
    click.option("--ablation_method", "--ablation-method", "ablation_method",
                 type=click.Choice(["zero", "mean", "noise"]), default="zero", show_default=True,
                 help="Replace destroyed units by zero, their dataset mean, or mean + matched Gaussian noise."),
    click.option("--fractions", default="0,0.1,0.25,0.5,0.75,0.9,1", show_default=True,
                 help="Comma list of fractions p of units to destroy."),
    click.option("--ablation_seeds", "--ablation-seeds", "ablation_seeds", type=int, default=3, show_default=True,
                 help="Random unit choices per fraction (the control)."),
    click.option("--ablation_units", "--ablation-units", "ablation_units", default="random,probe", show_default=True,
                 help="Unit choices: random (control) and/or probe (ranked by probe weight magnitude)."),
    click.option("--patch_fraction", "--patch-fraction", "patch_fraction", type=float, default=0.3,
                 show_default=True, help="Share q of image tokens masked (top / bottom / random attention); 0 skips."),
    click.option("--calibration_docs", "--calibration-docs", "calibration_docs", type=int, default=64,
                 show_default=True, help="Docs whose activations give the units' mean and scale."),
]


def _apply(options: list[Any]) -> Any:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


_ABLATION_PARAMS = tuple(param.name for param in _apply(_ABLATION_OPTIONS)(lambda: None).__click_params__)


def _ablation_settings(options: dict[str, Any]) -> AblationSettings:
    """``AblationSettings`` from the parsed ablation flags (one-line errors for bad values)."""
    from vrp_bench.interventions import AblationSettings

    layer_text = str(options["layer"]).strip()
    try:
        layer: Any = int(layer_text)
    except ValueError:
        layer = layer_text
    try:
        fractions = tuple(float(p) for p in options["fractions"].split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--fractions {options['fractions']!r}: expected numbers separated by commas") from None
    return AblationSettings(
        layer=layer, space=options["ablation_space"], method=options["ablation_method"], fractions=fractions,
        seeds=options["ablation_seeds"], selections=tuple(s.strip() for s in options["ablation_units"].split(",") if s.strip()),
        patch_fraction=options["patch_fraction"], calibration_docs=options["calibration_docs"],
    )


@cli.command("run")
@_apply(_RUN_OPTIONS)
@click.option("--ablate", is_flag=True, help="Also run the ablation sweep (see `vrp-bench ablate --help`).")
@_apply(_ABLATION_OPTIONS)
def run_command(ablate: bool, **options: Any) -> None:
    """Evaluate a model on tasks and print (and optionally save) the results."""
    context = click.get_current_context()
    given = [name for name in _ABLATION_PARAMS
             if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given and not ablate:
        raise UsageError(f"--{given[0]} only applies with --ablate (or use `vrp-bench ablate`)")
    _run(options, _ablation_settings(options) if ablate else None)


@cli.command("ablate")
@_apply(_RUN_OPTIONS)
@_apply(_ABLATION_OPTIONS)
def ablate_command(**options: Any) -> None:
    """Evaluate, then ablate: destroy growing fractions of a decoder layer's units (random vs probe-ranked) and
    mask the most / least attended image tokens, and measure how accuracy and reliability signals hold up."""
    _run(options, _ablation_settings(options))


def _run(options: dict[str, Any], ablation_settings: AblationSettings | None) -> None:
    """The run (and, with ``ablation_settings``, the ablation sweep): ``vrp_bench.run.evaluate`` with the flags."""
    from vrp_bench.api.arguments import parse_key_values
    from vrp_bench.api.task_index import TaskIndex
    from vrp_bench.builtins import check_builtin_model

    _configure_logging(options["verbosity"], quiet_libraries=False)
    if options["tasks"].strip() == "list":
        click.echo(_tasks_table(TaskIndex(options["include_paths"])))
        return
    for flag in ("log_samples", "save_traces", "plots"):
        if options[flag] and options["output_path"] is None:
            raise UsageError(f"--{flag} needs --output_path (where to write the per-sample files)")
    # names and the checkpoint first, before torch and transformers are imported (seconds): a typo is reported at once
    logging.disable(logging.WARNING)  # the run indexes the tasks again and warns then
    try:
        TaskIndex(options["include_paths"]).select(options["tasks"])
    finally:
        logging.disable(logging.NOTSET)
    model_args = parse_key_values(options["model_args"], "--model_args")
    check_builtin_model(options["model"], model_args)
    _configure_logging(options["verbosity"])

    from tqdm import tqdm

    from vrp_bench.report.console import summary_table
    from vrp_bench.run import evaluate, parse_dataset_paths
    from vrp_bench.scoring.settings import ScoringSettings

    if options["sc_samples"] is not None:
        model_args["sc_samples"] = options["sc_samples"]

    def progress(description: str) -> Any:
        return lambda total: tqdm(total=total, desc=description, unit="doc", disable=None, file=sys.stderr)

    result = evaluate(
        options["model"],
        options["tasks"],
        model_args=model_args,
        include_paths=options["include_paths"],
        dataset_paths=parse_dataset_paths(options["dataset_path_overrides"], "--dataset_path_override"),
        limit=options["limit"],
        batch_size=options["batch_size"],
        device=options["device"],
        seed=options["seed"],
        gen_kwargs=parse_key_values(options["gen_kwargs"], "--gen_kwargs"),
        max_failed_share=options["max_failed_share"],
        scoring=_scoring_settings(options, ScoringSettings(seed=options["seed"])),
        ablation=ablation_settings,
        output_path=options["output_path"],
        log_samples=options["log_samples"] or options["plots"],
        save_traces=options["save_traces"] or options["plots"],
        progress=progress,
        command_line=" ".join(shlex.quote(a) for a in ["vrp-bench", *sys.argv[1:]]),
        cache=not options["no_cache"],
        cache_dir=options["cache_dir"],
        threads=options["threads"],
    )
    if result is None:  # a data-parallel process other than the first: the first reports
        return
    click.echo(summary_table(result.report))
    if result.files is not None:
        click.echo(f"wrote {len(result.written)} file(s) to {result.files.folder}")
    if options["plots"]:
        _write_pictures(result.files.results, None, None)


def _tasks_table(index: Any) -> str:
    from tabulate import tabulate

    from vrp_bench.api.task_index import builtin_tasks_dir

    builtin = builtin_tasks_dir()
    rows = []
    for name, entry in sorted(index.tasks.items()):
        folder = entry.yaml_path.parent
        source = f"tasks/{folder.relative_to(builtin)}" if folder.is_relative_to(builtin) else str(folder)
        rows.append([name, "task", ", ".join(index.groups_of(name)), source, index.data_offline(name)])
    for name, members in sorted(index.groups.items()):
        kind = "group" if name in index.group_sources else "tag"
        rows.append([name, kind, f"{len(index.expand(name))} tasks", "", ""])
    return tabulate(rows, headers=["Name", "Kind", "Groups", "Source", "Data offline"], tablefmt="github")


def _index_summary(index: Any, failures: dict[str, Any] | None) -> str:
    """Counts of what was indexed (and, after ``--check``, built), and the causes of what was not."""
    from collections import Counter

    from tabulate import tabulate

    n_groups = len(index.group_sources)
    lines = [f"{index.n_files} YAML files: {len(index.tasks)} tasks, {n_groups} groups, "
             f"{len(index.groups) - n_groups} tags; {len(index.problems)} definitions not indexed"]
    causes = Counter(index.problem_counts())
    if failures is not None:
        lines.append(f"built {len(index.tasks) - len(failures)} of {len(index.tasks)} tasks (task code imported, "
                     f"data not loaded); {len(failures)} cannot be built")
        causes.update(exc.cause or "other" for exc in failures.values())
    if causes:
        lines.append(tabulate(causes.most_common(), headers=["Not usable because", "Count"], tablefmt="github"))
    return "\n".join(lines)


@cli.command("tasks")
@click.option("--include_path", "--include-path", "include_paths", multiple=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Also build every task (imports its task code; loads no data) and count "
                                           "what cannot be built, by cause.")
@click.option("--summary", is_flag=True, help="Print only the counts, not the table of every task.")
def tasks_command(include_paths: tuple[Path, ...], check: bool, summary: bool) -> None:
    """List every task, group and tag: source folder and whether its data is available offline. Files that cannot
    be used are counted by cause (``--verbosity`` DEBUG on `run` shows each); indexing never stops at one."""
    from vrp_bench.api.task_index import TaskIndex

    logging.basicConfig(level="ERROR", format="%(levelname)s %(name)s: %(message)s")
    index = TaskIndex(include_paths)
    failures = index.check() if check else None
    if not summary:
        click.echo(_tasks_table(index))
    click.echo(_index_summary(index, failures))


@cli.command("models")
def models_command() -> None:
    """List the registered models."""
    from tabulate import tabulate

    from vrp_bench.api.model import MODELS

    _load_registries()
    click.echo(tabulate([[name, cls.description] for name, cls in MODELS.items()], headers=["Model", "Description"],
                        tablefmt="github"))


@cli.command("validate")
@click.argument("report", type=click.Path(path_type=Path))
def validate_command(report: Path) -> None:
    """Check a report file against the shipped JSON Schema (vrp-report/3), then the sha256 of each file it lists
    that is beside it; a broken schema or a file that differs from its hash exits 2."""
    from vrp_bench.report.saved_run import check_listed_files, read_report
    from vrp_bench.report.schema import SCHEMA_ID

    content = read_report(report)
    checked, listed = check_listed_files(report, content), len(content["files"])
    absent = f" ({listed - checked} absent: not checked)" if checked < listed else ""
    click.echo(f"{report}: valid {SCHEMA_ID}; {checked} of {listed} listed files present and matching their "
               f"hashes{absent}")


@cli.command("show")
@click.argument("report", type=click.Path(path_type=Path))
def show_command(report: Path) -> None:
    """Print a report's summary tables again: a results file or its folder, of vrp-bench or of lmms-eval (whose
    metrics are shown as it saved them; it records no reliability signals)."""
    from vrp_bench.report.console import summary_table
    from vrp_bench.report.lmms_eval_results import read_shown_report

    content, notes = read_shown_report(report)
    click.echo(summary_table(content))
    for note in notes:
        click.echo(note)


@cli.command("score")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Write the re-scored report here.")
@_apply(_scoring_options(rescoring=True))
def score_command(path: Path, output: Path | None, **scoring_flags: Any) -> None:
    """Recompute every statistic of a run from its saved per-sample files (no model needed), after checking that
    every record agrees with its metrics and every file with its hash in the report (exit 2 otherwise). PATH may
    also be an lmms-eval run (its results file or folder, with its --log_samples files): answers and metrics, no
    reliability signals."""
    from vrp_bench.api.files import write_files_atomically
    from vrp_bench.report.console import summary_table
    from vrp_bench.report.lmms_eval_results import load_scored_run
    from vrp_bench.report.saved_run import rescore
    from vrp_bench.report.schema import require_valid
    from vrp_bench.report.writer import json_text
    from vrp_bench.scoring.settings import ScoringSettings

    run, notes = load_scored_run(path)
    report, kept = rescore(run, _scoring_settings(scoring_flags, ScoringSettings(**run.report["config"]["scoring"])))
    require_valid(report)
    click.echo(summary_table(report))
    if kept:
        click.echo(f"kept as saved (custom aggregations are task code, not run again): {', '.join(kept)}")
    for note in notes:
        click.echo(note)
    if output is not None:
        write_files_atomically({output: json_text(report)})
        click.echo(f"wrote {output}")


def _write_pictures(path: Path, output: Path | None, layers: str | None) -> None:
    from vrp_bench.report.html_report import write_run_report
    from vrp_bench.report.plot_inputs import check_layers

    written = write_run_report(path, output, check_layers(layers))
    click.echo(f"wrote {len(written) - 1} picture(s) and {written[-1]}")


@cli.command("plot")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the PNGs and report.html (default: plots/ beside the results file).")
@click.option("--layers", default=None,
              help="Heatmap layers, a comma list (negative: from the last), of the decoder and the vision encoder "
                   "alike [default: first, middle, last].")
def plot_command(path: Path, output: Path | None, layers: str | None) -> None:
    """Draw a saved run's pictures (PNG: per-layer profiles, attention heatmaps with the ground-truth boxes,
    reliability diagrams, risk-coverage curves, probe AUROC per layer, ablation curves) and a self-contained
    report.html with its summary tables beside them; a picture the run lacks the data for is listed with the
    reason. PATH: a results file or its folder (with its --log_samples / --save_traces files for the per-sample
    pictures)."""
    _write_pictures(path, output, layers)


@cli.command("regress")
@click.option("--baseline", required=True, type=click.Path(path_type=Path),
              help="The baseline run: its results file or folder (with its --log_samples files).")
@click.option("--current", required=True, type=click.Path(path_type=Path), help="The run to check, likewise.")
@click.option("--tolerance", default="0.02", show_default=True,
              help="Smallest significant drop that fails the gate: one number, or kind=number pairs "
                   "(accuracy=0.01,auroc=0.03,robustness_auc=0.05; kinds not named keep 0.02).")
@click.option("--bootstrap_resamples", "--bootstrap-resamples", "bootstrap_resamples", type=click.IntRange(min=100),
              default=None, help="Paired bootstrap resamples (default: the baseline's).")
@click.option("--seed", type=int, default=None, help="Bootstrap seed (default: the baseline's scoring seed).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Also write the comparison as JSON.")
def regress_command(baseline: Path, current: Path, tolerance: str, bootstrap_resamples: int | None, seed: int | None,
                    output: Path | None) -> None:
    """Compare a run with a baseline run of the same docs: per task and pooled, the change in accuracy, each
    signal's within-task AUROC and the robustness AUC, with paired bootstrap CIs. Exit 1 when a change is a
    significant regression beyond the tolerance, 2 when the runs are not comparable, else 0."""
    from vrp_bench.report.regression import Tolerance, compare_runs, write_comparison

    comparison = compare_runs(baseline, current, Tolerance.parse(tolerance), bootstrap_resamples, seed)
    click.echo(comparison.table())
    for reason in comparison.not_compared:
        click.echo(f"not compared: {reason}")
    click.echo(comparison.summary_line())
    if output is not None:
        write_comparison(comparison, output)
        click.echo(f"wrote {output}")
    if comparison.regressions:
        click.get_current_context().exit(1)


@cli.group("leaderboard")
def leaderboard_group() -> None:
    """The leaderboard: submit runs, verify them, build the board (leaderboard/)."""


def _default_board() -> Path:
    return Path("leaderboard")


@leaderboard_group.command("submit")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--root", type=click.Path(path_type=Path), default=None, help="The board's folder (default: ./leaderboard).")
def leaderboard_submit(path: Path, root: Path | None) -> None:
    """Check a run (a results file or its folder: schema, provenance, hashes, every number against its
    recomputation, duplicates, comparability) and place it in <root>/submissions/<model>/; refused runs write
    nothing and exit 2 with the reason."""
    from vrp_bench.leaderboard.submission import submit

    written = submit(path, root or _default_board())
    click.echo(f"submitted: {len(written)} file(s) in {written[-1].parent}; rebuild the board with "
               "`vrp-bench leaderboard build`")


@leaderboard_group.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="Docs per task to re-run.")
@click.option("--atol", type=click.FloatRange(min=0), default=None, help="Absolute tolerance of a signal (default 1e-4).")
@click.option("--rtol", type=click.FloatRange(min=0), default=None, help="Relative tolerance of a signal (default 1e-3).")
@click.option("--device", default=None, help="Device for the model (e.g. cpu, cuda:0).")
def leaderboard_verify(path: Path, limit: int, atol: float | None, rtol: float | None, device: str | None) -> None:
    """Re-run the first --limit docs of every task of a run with its recorded settings: the checkpoint's
    fingerprint, the docs, answers and correctness must match and the signals agree within tolerance (exit 1
    otherwise)."""
    from tabulate import tabulate

    from vrp_bench.leaderboard.verification import ATOL, RTOL, verify_run

    _configure_logging("WARNING")
    result = verify_run(path, limit, ATOL if atol is None else atol, RTOL if rtol is None else rtol, device)
    rows = [[check.task, check.compared, len(check.disagreements),
             "; ".join(f"doc {doc} {what}: {saved!r} -> {rerun!r}" for doc, what, saved, rerun in check.disagreements[:2])]
            for check in result.tasks]
    click.echo(tabulate(rows, headers=["Task", "Docs", "Disagreements", "First"], tablefmt="github"))
    fingerprint = {None: "not recorded", True: "matches", False: "DIFFERS"}[result.fingerprint_matches]
    click.echo(f"model fingerprint: {fingerprint}")
    if not result.passed:
        raise VRPError("verification failed: the re-run does not reproduce the submitted run")
    click.echo("verified: the re-run reproduces the submitted run")


@leaderboard_group.command("build")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="The board's folder (default: ./leaderboard).")
@click.option("--resamples", type=click.IntRange(min=100), default=None,
              help="Joint bootstrap replicates of the rank intervals (default 1000).")
def leaderboard_build(root: Path | None, resamples: int | None) -> None:
    """Rank the runs in <root>/submissions/ and write <root>/LEADERBOARD.md and the static site <root>/site/
    (index.html with sortable columns, a page per model); see README, "Leaderboard"."""
    from vrp_bench.leaderboard.build import build_leaderboard
    from vrp_bench.leaderboard.ranking import RANK_RESAMPLES

    root = root or _default_board()
    board, written = build_leaderboard(root, RANK_RESAMPLES if resamples is None else resamples)
    if not (board.entries or board.not_comparable or board.not_on_board):
        click.echo(f"no submissions in {root / 'submissions'}: wrote an empty board (submit a run with "
                   "`vrp-bench leaderboard submit RUN_DIR`)")
    else:
        click.echo(f"ranked {len(board.entries)} run(s); {len(board.not_comparable)} not comparable with the board, "
                   f"{len(board.not_on_board)} not on it (reasons in {written[0].name})")
    click.echo(f"wrote {written[0]} and {len(written) - 1} file(s) in {root / 'site'}")


@cli.group("zoo")
def zoo_group() -> None:
    """The tiny zoo: small trained checkpoints of each family's real architecture."""


@zoo_group.command("train")
@click.option("--family", required=True, help="Model family with a tiny recipe (llava, paligemma, qwen2_vl, qwen2_5_vl).")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Checkpoint folder [default: ./tiny_<family>, which must not exist yet; the shipped checkpoint "
                   "changes only when named here].")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimiser steps [default: the shipped checkpoint's, so that the command reproduces it].")
@click.option("--seconds", type=click.FloatRange(min=1), default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Measure test and blank-image accuracy for the model card.")
def zoo_train(family: str, output: Path | None, steps: int | None, seconds: float | None, seed: int,
              evaluate: bool) -> None:
    """Train a tiny model of FAMILY on the vrp_shapes train split (CPU, seeded) and save it with its card; with the
    defaults, it is the shipped checkpoint again."""
    from vrp_bench.api.registry import suggest
    from vrp_bench.zoo.recipes import RECIPES
    from vrp_bench.zoo.train import train_family

    _configure_logging("INFO")
    if family not in RECIPES:
        raise UsageError(f"no tiny recipe for family {family!r}{suggest(family, list(RECIPES))}; "
                         f"known: {', '.join(RECIPES)}")
    if output is None:
        output = Path(f"tiny_{family}")
        if output.exists():
            raise UsageError(f"{output} already exists; remove it or give another folder with --output")
    card = train_family(family, output, steps=steps, seconds=seconds, seed=seed, evaluate_test=evaluate)
    click.echo(f"trained {family}: test accuracy {card.get('test_accuracy')} (checkpoint and card in {output})")


@cli.group("shapes")
def shapes_group() -> None:
    """The embedded vrp_shapes benchmark: regenerate or verify its shipped data."""


def _shapes_data_dir() -> Path:
    from vrp_bench.api.task_index import builtin_tasks_dir

    return builtin_tasks_dir() / "vrp_shapes" / "data"


@shapes_group.command("generate")
@click.option("--output_dir", "--output-dir", "output_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write (default: the shipped tasks/vrp_shapes/data).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--n_per_set", "--n-per-set", "n_per_set", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image_size", "--image-size", "image_sizes", type=click.IntRange(min=16), multiple=True,
              default=(64, 336), show_default=True)
def shapes_generate(output_dir: Path | None, split: str, n_per_set: int, seed: int, image_sizes: tuple[int, ...]) -> None:
    """Write the parquet files of a split and their MANIFEST.json (deterministic for a seed)."""
    from vrp_bench.datasets.export import write_split

    if split == "train" and output_dir is None:
        raise UsageError("the train split is not shipped: give --output_dir for it")
    target = output_dir or _shapes_data_dir()
    manifest = write_split(target, split=split, n_per_set=n_per_set, seed=seed, image_sizes=tuple(image_sizes))
    click.echo(f"wrote {len(manifest['files'])} files to {target}")


@shapes_group.command("verify")
@click.option("--data_dir", "--data-dir", "data_dir", type=click.Path(path_type=Path), default=None)
def shapes_verify(data_dir: Path | None) -> None:
    """Regenerate in memory and compare with the shipped files' content hashes."""
    from vrp_bench.datasets.export import verify_split

    target = data_dir or _shapes_data_dir()
    if not (target / "MANIFEST.json").is_file():
        raise UsageError(f"{target} has no MANIFEST.json; is it a vrp_shapes data folder?")
    problems = verify_split(target)
    if problems:
        raise VRPError(f"{len(problems)} mismatch(es); first: {problems[0]}")
    click.echo(f"{target}: every file reproduces its manifest content hash")


@cli.command("signals")
def signals_command() -> None:
    """List the reliability signals: orientation (+1: higher = more likely right), kind, whether it reads the
    reference answer (then it is a diagnostic, never ranked), and what each is."""
    from tabulate import tabulate

    from vrp_bench.signals.catalogue import SIGNALS

    rows = []
    for name, spec in SIGNALS.items():
        orientation = {1: "+1", -1: "-1", None: "measured, not scored"}[spec.orientation]
        kind = "per layer" if spec.per_layer else ("probability" if spec.probability else "scalar")
        reads = {None: "-", "target": "target (diagnostic)",
                 "boxes": "boxes (diagnostic unless answer-independent)"}[spec.reference]
        rows.append([name, orientation, kind, reads, (spec.description.splitlines() or [""])[0]])
    click.echo(tabulate(rows, headers=["Signal", "Orientation", "Kind", "Reads the reference", "What it is"],
                        tablefmt="github"))


def _configure_logging(verbosity: str, quiet_libraries: bool = True) -> None:
    """Log at ``verbosity`` (DEBUG also prints tracebacks); unless DEBUG, and when ``quiet_libraries`` (it imports
    them), turn off the progress bars and info messages of datasets and transformers."""
    global _show_tracebacks
    _show_tracebacks = verbosity.upper() == "DEBUG"
    logging.basicConfig(level=verbosity.upper(), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # its import says how many threads it takes, at INFO
    if quiet_libraries and not _show_tracebacks:
        import datasets

        import transformers

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vrp-bench`` console script; returns the exit code."""
    try:
        # a command that ends with ctx.exit(code) (a verdict such as `regress` finding a regression, not an error)
        # makes click return that code here instead of raising
        code = cli.main(args=argv, prog_name="vrp-bench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        return 2
    except click.ClickException as exc:  # bad flags: click's own usage errors
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "vrp-bench"
        click.echo(f"vrp-bench: error: {exc.format_message()} (see `{command} --help`)", err=True)
        return 2
    except VRPError as exc:
        click.echo(f"vrp-bench: error: {exc}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("vrp-bench: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug, not a user error: one line, the traceback on request
        if _show_tracebacks:
            traceback.print_exc()
        first_line = (str(exc).splitlines() or [""])[0]
        click.echo(f"vrp-bench: internal error: {type(exc).__name__}: {first_line} "
                   "(rerun with --verbosity DEBUG for the traceback)", err=True)
        return 1
    return code if isinstance(code, int) else 0


def console_main() -> None:
    """setuptools console-script wrapper."""
    sys.exit(main())
