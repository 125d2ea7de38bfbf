"""`tts-build-trt`: TensorRT plans for a pack (one per graph x precision x chunk mode), or a dry run."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from specs.cli import new_app
from specs.errors import ToolError, cli_entry

app = new_app()


@app.command()
def build(
    pack: Path = typer.Option(
        ...,
        "--pack",
        "-p",
        help="Pack directory written by tts-export; plans are added to it under trt/ and its manifest's `plans`.",
    ),
    precision: list[str] | None = typer.Option(
        None,
        "--precision",
        help="fp16 (default: strongly typed, "
        "per-graph layers kept fp32) or fp32 (TF32 off); repeat or "
        "comma-separate for both.",
    ),
    graphs: list[str] | None = typer.Option(
        None,
        "--graphs",
        "-g",
        help="Graphs to build (repeat or "
        "comma-separate; a unique last name part is enough, e.g. "
        "'estimator' for flow.decoder.estimator). Default: every fp32 graph.",
    ),
    chunk: list[str] | None = typer.Option(
        None,
        "--chunk",
        help="Chunk policy: stream (first chunk with prompt "
        "pad, steady chunks, final chunk) or offline (one call per "
        "utterance); default both. The LLM has one plan ('any').",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print every planned engine with its profiles and build nothing (no GPU, TensorRT or Polygraphy needed).",
    ),
    workspace: float = typer.Option(4.0, "--workspace", min=0.25, help="Builder workspace memory pool, GiB."),
    zero_length: str = typer.Option(
        "profile",
        "--zero-length",
        help="Calls with a zero-length input (HiFT's "
        "first chunk, LLM prefill, no prompt): 'profile' = a profile with that dim "
        "pinned to 0; 'ort' = no profile, the runtime runs them on ONNX Runtime.",
    ),
    max_dim: list[str] | None = typer.Option(
        None,
        "--max-dim",
        help="DIM=N: set the max of a dynamic dim in every profile (e.g. past_sequence_length=8191); repeatable.",
    ),
    validate: bool = typer.Option(
        True,
        "--validate/--no-validate",
        help="Run the graph's test vectors on each "
        "new engine and on ONNX Runtime and commit the plan only if they agree.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Polygraphy/TensorRT builder log at verbose level."),
):
    """Build TensorRT engines for a pack with Polygraphy: profiles from each graph's I/O spec and the pack's
    chunk policy, plan + metadata written into the pack atomically (a failed build leaves it unchanged).

    Examples:

      tts-build-trt --pack build/tiny-pack --dry-run

      tts-build-trt --pack cv2-pack --graphs estimator,hift --precision fp16 --chunk stream
    """
    from specs.chunk_policy import CHUNK_MODES
    from specs.pack import Pack
    from specs.plans import PLAN_PRECISIONS as PRECISIONS
    from trt.dry_run import dry_run_lines
    from trt.plans import parse_choices, parse_max_dims, plan_engines
    from trt.profiles import ZERO_LENGTH

    t0 = time.time()
    precisions = _usage("--precision", parse_choices, precision, PRECISIONS, ["fp16"])
    chunks = _usage("--chunk", parse_choices, chunk, CHUNK_MODES, CHUNK_MODES)
    caps = _usage("--max-dim", parse_max_dims, max_dim)
    if zero_length not in ZERO_LENGTH:
        raise typer.BadParameter(f"{zero_length!r} (choose from {', '.join(ZERO_LENGTH)})", param_hint="--zero-length")
    names = [n.strip() for g in (graphs or []) for n in g.split(",") if n.strip()] or None
    opened = Pack.open(pack)
    plans = plan_engines(opened, names, precisions, chunks, zero_length, caps)
    if dry_run:
        for line in dry_run_lines(plans):
            typer.echo(line)
        typer.echo(f"DRY RUN | {len(plans.engines)} engine(s) planned, nothing built | tts-build-trt {opened.root}")
        return
    if not plans.engines:
        raise ToolError(opened.root, "no engine to build", "; ".join(plans.skipped) or "check --graphs/--chunk")
    from backends.trt_host import require_host
    from trt.build import build_plans

    host = require_host()
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    for s in plans.skipped:
        log(f"NOTE | skipped {s}")
    done = build_plans(opened.root, plans.engines, workspace, validate, verbose, log, host)
    typer.echo(
        f"PASSED | {time.time() - t0:.1f} s | tts-build-trt {opened.root} | {len(done)} plan(s): " + ", ".join(done)
    )


def _usage(option: str, parse, *args):
    """Option values that cannot be parsed are usage errors (typer's exit code 2)."""
    try:
        return parse(*args)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


@cli_entry
def main() -> None:
    app()


if __name__ == "__main__":
    main()
