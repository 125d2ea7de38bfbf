"""`tts-validate`: re-run every graph's test vectors on ONNX Runtime and judge them; non-zero exit on failure."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from specs.cli import console_log, new_app
from specs.errors import cli_entry
from specs.outputs import OutputFile, check_output

app = new_app()


@app.command()
def validate(
    pack: Path = typer.Argument(..., help="Pack directory written by tts-export."),
    golden: Path | None = typer.Option(
        None,
        "--golden",
        help="Directory of committed golden vectors "
        "(NAME.vectors.npz per graph, e.g. golden/tiny): each graph must also "
        "reproduce them.",
    ),
    graphs: list[str] | None = typer.Option(None, "--graphs", "-g", help="Validate only these graphs."),
    device: str = typer.Option("cpu", "--device", help="ONNX Runtime device: cpu or cuda."),
    verify_hashes: bool = typer.Option(
        True, "--verify-hashes/--no-verify-hashes", help="Check every file's sha256 against the manifest first."
    ),
    report_json: Path | None = typer.Option(None, "--report-json", help="Also write the report as JSON."),
):
    """Validate a pack: file hashes, I/O specs, and every graph's test vectors on ONNX Runtime.

    Prints one verdict line per output (max abs error, where, and the smallest tolerance that would
    pass), then a summary; exits 1 if anything fails. TensorRT plans in the pack are validated too when
    TensorRT and a GPU are available.
    """
    from conformance.validate import ValidationOptions, validate_pack

    log = console_log(stderr=False)
    names = [n.strip() for g in (graphs or []) for n in g.split(",") if n.strip()] or None
    target = check_output(report_json, "--report-json", allow_stdout=True) if report_json else None
    t0 = time.time()
    result = validate_pack(
        pack, ValidationOptions(golden=golden, graphs=names, device=device, verify_hashes=verify_hashes, log=log)
    )
    rep = result.report
    if target is not None:
        with OutputFile(target) as f:
            f.write((json.dumps(rep.to_dict(), indent=2) + "\n").encode())
            f.commit()
    log(rep.summary())
    verdict = "PASSED" if rep.passed else "FAILED"
    log(f"{verdict} | {time.time() - t0:.1f} s | tts-validate {pack}")
    if not rep.passed:
        raise typer.Exit(1)


@cli_entry
def main() -> None:
    app()


if __name__ == "__main__":
    main()
