"""`tts-export --random-init {tiny,full}`: a CosyVoice2 bundle in the official layout with seeded random weights.

No real weights can be downloaded here, so everything is built and tested on the upstream model code with
random weights (sizes: exporters/random/config.py), calibrated where the tests look
(exporters/random/calibration.py), with stand-in frontend models (exporters/random/standins.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from exporters.random.calibration import Calibration, calibrate_hift, calibrate_llm_head, jitter_constant_tensors
from exporters.random.config import ARCH, SIZES, TOKENIZER_CONFIG, qwen_config, render_yaml, tokenizer_source
from specs.errors import ToolError


def make_random_bundle(out: Path, size: str, seed: int, progress=None, calibrate: bool = True) -> Path:
    """Write a CosyVoice2 bundle with seeded random weights into `out` (atomically).

    `calibrate=False` keeps upstream's own initialisation (the modules as `build_modules` makes them under
    `torch.manual_seed(seed)`: no jitter, no calibration), e.g. to check that the export gates are not tuned
    to our calibrated bundles (ci/sweep_hift_gate.py); random_init.json then records `"calibrated": false`."""
    import tempfile

    import torch

    if size not in SIZES:
        raise ToolError("--random-init", f"unknown size {size!r}", f"one of {', '.join(SIZES)}")
    out = Path(out)
    if out.exists():
        raise ToolError(out, "already exists", "a new directory for the random bundle")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        step = progress or (lambda msg: None)
        step(f"writing {size} config")
        (tmp / "cosyvoice2.yaml").write_text(render_yaml(size))
        qdir = tmp / "CosyVoice-BlankEN"
        qdir.mkdir()
        (qdir / "config.json").write_text(json.dumps(qwen_config(size), indent=2) + "\n")
        (qdir / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        src = tokenizer_source()
        shutil.copyfile(src / "vocab.json", qdir / "vocab.json")
        shutil.copyfile(src / "merges.txt", qdir / "merges.txt")

        step("building modules")
        from exporters.model.config import build_modules

        torch.manual_seed(seed)
        model = build_modules(tmp / "cosyvoice2.yaml", "cosyvoice2", qdir)
        cal = Calibration()
        if calibrate:
            step("randomising and calibrating weights")
            gen = torch.Generator().manual_seed(seed + 1)
            for module in (model.llm, model.flow, model.hift):
                jitter_constant_tensors(module, gen)
            calibrate_llm_head(model.llm, gen, cal)
            calibrate_hift(model.flow, model.hift, gen, cal)
        else:
            cal.notes.append("not calibrated: upstream's own initialisation under torch.manual_seed(seed)")
        step("saving llm.pt, flow.pt, hift.pt")
        torch.save(model.llm.state_dict(), tmp / "llm.pt")
        torch.save(model.flow.state_dict(), tmp / "flow.pt")
        torch.save(model.hift.state_dict(), tmp / "hift.pt")
        step("writing stand-in campplus.onnx and speech_tokenizer_v2.onnx")
        from exporters.random.standins import write_campplus_standin, write_speech_tokenizer_standin

        write_campplus_standin(tmp / "campplus.onnx", seed)
        write_speech_tokenizer_standin(tmp / "speech_tokenizer_v2.onnx", seed)
        (tmp / "random_init.json").write_text(
            json.dumps(
                {
                    "size": size,
                    "seed": seed,
                    "calibrated": calibrate,
                    "arch": asdict(ARCH[size]),
                    "calibration": asdict(cal),
                },
                indent=2,
            )
            + "\n"
        )
        tmp.chmod(0o755)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
