"""`tts-export`: CosyVoice model bundle -> artifact pack (ONNX graphs, I/O specs, test vectors, manifest)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import typer

from specs.cli import console_log, new_app
from specs.errors import ToolError, cli_entry
from specs.pack import check_new_directory_parent, check_pack_destination

RANDOM_FAMILIES = {"v1": "cosyvoice1", "v2": "cosyvoice2", "v3": "cosyvoice3"}  # --family -> the bundle family it makes

app = new_app()


@app.command()
def export(
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Pack directory to write (written atomically: a temporary "
        "sibling directory is renamed into place only when every check passed).",
    ),
    model_dir: Path | None = typer.Option(
        None,
        "--model-dir",
        "-m",
        help="CosyVoice bundle directory, e.g. CosyVoice2-0.5B/ (cosyvoice2.yaml, llm.pt, flow.pt, hift.pt, ...).",
    ),
    random_init: str | None = typer.Option(
        None,
        "--random-init",
        help="Instead of --model-dir, make a bundle "
        "with seeded random weights: 'tiny' (small config, seconds) or "
        "'full' (the shipped CosyVoice2-0.5B sizes).",
    ),
    family: str = typer.Option(
        "v2",
        "--family",
        help="With --random-init: which generation to make, 'v1' (CosyVoice-300M-SFT layout, with speakers), 'v2' "
        "(CosyVoice2-0.5B) or 'v3' (Fun-CosyVoice3-0.5B-2512).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for --random-init weights and for the test vectors."),
    keep_bundle: Path | None = typer.Option(
        None,
        "--keep-bundle",
        help="With --random-init: also keep the random bundle in this directory (default: a temporary one).",
    ),
    graphs: list[str] | None = typer.Option(
        None, "--graphs", "-g", help="Export only these graphs (repeat or comma-separate). Default: all."
    ),
    fp16: bool = typer.Option(
        False,
        "--fp16",
        help="Also write an FP16 ONNX Runtime variant of the graphs whose "
        "fp16 policy offers one (NAME.fp16), checked against the FP32 PyTorch outputs.",
    ),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also write an INT8 weight-only variant of the graphs that "
        "declare one (the LLM: llm.int8, MatMul weights in 8 bits, fp32 I/O), checked "
        "against the FP32 PyTorch outputs under its own tolerances.",
    ),
    simplify: bool = typer.Option(
        True,
        "--simplify/--no-simplify",
        help="Run onnxsim and keep its graph only if it still passes every test vector.",
    ),
    verify_official: bool = typer.Option(
        False,
        "--verify-official",
        help="Check the size and sha256 of known official files (llm.pt, flow.pt, hift.pt, ...) before exporting.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing pack at --out (or repository at --triton-repo)."
    ),
    pack: Path | None = typer.Option(None, "--pack", help="With --triton-repo: a pack written by tts-export."),
    triton_repo: Path | None = typer.Option(
        None,
        "--triton-repo",
        help="Write a Triton model repository for --pack into this directory (no export): see RUNBOOK.md, "
        "'Serving with Triton'.",
    ),
    llm: str = typer.Option(
        "local",
        "--llm",
        help="With --triton-repo: 'local' (the pack's LLM graph as the repository's llm model) or 'openai=URL' "
        "(an OpenAI-compatible /v1/chat/completions server such as vLLM or trtllm-serve).",
    ),
):
    """Export a CosyVoice bundle to an artifact pack and check every graph against upstream PyTorch.

    Every graph is checked with onnx.checker, compared on ONNX Runtime with the upstream PyTorch module
    on its test cases (first chunk with empty caches, steady-state and final chunks) under the tolerances
    its I/O spec states, and simplified with onnxsim only if the outputs still match. Any failure exits
    non-zero and writes nothing.

    Examples:

      tts-export --random-init tiny --out build/tiny-pack

      tts-export --model-dir CosyVoice2-0.5B --out cv2-pack --verify-official
    """
    import logging

    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    log = console_log(stderr=True)
    logging.getLogger().setLevel(logging.WARNING)  # upstream logs INFO lines while building modules
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    if triton_repo is not None or pack is not None:
        if triton_repo is None or pack is None:
            raise typer.BadParameter("--pack and --triton-repo go together", param_hint="--triton-repo")
        if model_dir is not None or random_init is not None or out is not None:
            raise typer.BadParameter(
                "--triton-repo reads an exported --pack (no --model-dir / --random-init / --out)",
                param_hint="--triton-repo",
            )
        from serving.triton import write_triton_repo

        path = write_triton_repo(pack, triton_repo, llm=llm, overwrite=overwrite)
        log(f"PASSED | Triton repository {path} for {pack} (llm {llm}); serve: tritonserver --model-repository {path}")
        return
    if out is None:
        raise typer.BadParameter("missing (the pack directory to write)", param_hint="--out")
    names = [n.strip() for g in (graphs or []) for n in g.split(",") if n.strip()] or None
    if (model_dir is None) == (random_init is None):  # usage errors: typer's exit code 2
        raise typer.BadParameter(
            "give exactly one of --model-dir DIR (a real bundle) or --random-init tiny|full", param_hint="--model-dir"
        )
    if keep_bundle is not None and random_init is None:
        raise typer.BadParameter("--keep-bundle needs --random-init", param_hint="--keep-bundle")
    if family not in RANDOM_FAMILIES:
        raise typer.BadParameter(f"{family!r} (choose from {', '.join(RANDOM_FAMILIES)})", param_hint="--family")
    if family != "v2" and random_init is None:
        raise typer.BadParameter("--family needs --random-init (a real bundle's yaml says its family)",
                                 param_hint="--family")  # fmt: skip
    # Destinations are checked before any work: a 20-minute full-size bundle is not built for an --out that
    # cannot be written.
    check_pack_destination(out, overwrite)
    if keep_bundle is not None:
        if keep_bundle.exists() or keep_bundle.is_symlink():
            raise ToolError(keep_bundle, "already exists", "a new directory for --keep-bundle")
        check_new_directory_parent(keep_bundle, "--keep-bundle")
    t0 = time.time()
    opts = ExportOptions(seed=seed, simplify=simplify, fp16=fp16, int8=int8, log=log)
    tmp_root = None
    try:
        ri = None
        if random_init is not None:
            from exporters.random.bundle import make_random_bundle

            if keep_bundle is not None:
                model_dir = keep_bundle
            else:
                tmp_root = Path(tempfile.mkdtemp(prefix="cosyvoice-random-"))
                model_dir = tmp_root / "bundle"
            from rich.console import Console

            with Console(stderr=True).status(f"making a {random_init} random-init bundle (seed {seed})") as status:
                make_random_bundle(
                    model_dir, random_init, seed, progress=lambda m: status.update(m), family=RANDOM_FAMILIES[family]
                )
            log(f"random-init {RANDOM_FAMILIES[family]} bundle ({random_init}, seed {seed}) at {model_dir}")
            ri = {"size": random_init, "seed": seed, "family": RANDOM_FAMILIES[family]}
        result = export_pack(
            model_dir, out, names, opts, overwrite=overwrite, verify_official=verify_official, random_init=ri, log=log
        )
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    for g in result.graphs:
        worst = max(g.comparisons, key=lambda c: c.max_abs)
        log(
            f"  {g.name}: {len(g.comparisons)} outputs passed, max_abs {worst.max_abs:.2e} "
            f"({worst.label.split('/', 1)[1]}), simplified={g.simplified}"
        )
    log(f"PASSED | {time.time() - t0:.1f} s | tts-export {result.path}")


@cli_entry
def main() -> None:
    app()


if __name__ == "__main__":
    main()
