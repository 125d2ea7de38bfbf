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
from exporters.random.config_v3 import V3_ARCH, render_v3_yaml
from specs.errors import ToolError

# family -> (yaml file name, speech tokenizer file name) of the official layout
FAMILY_FILES = {
    "cosyvoice2": ("cosyvoice2.yaml", "speech_tokenizer_v2.onnx"),
    "cosyvoice3": ("cosyvoice3.yaml", "speech_tokenizer_v3.onnx"),
}


def make_random_bundle(
    out: Path, size: str, seed: int, progress=None, calibrate: bool = True, family: str = "cosyvoice2"
) -> Path:
    """Write a CosyVoice2 (or, with family="cosyvoice3", a Fun-CosyVoice3) bundle with seeded random weights
    into `out` (atomically), in the official layout.

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
        if family not in FAMILY_FILES:
            raise ToolError("--family", f"unknown family {family!r}", f"one of {', '.join(FAMILY_FILES)}")
        yaml_name, tokenizer_name = FAMILY_FILES[family]
        step(f"writing {size} {family} config")
        (tmp / yaml_name).write_text(render_v3_yaml(size) if family == "cosyvoice3" else render_yaml(size))
        qdir = tmp / "CosyVoice-BlankEN"
        qdir.mkdir()
        (qdir / "config.json").write_text(json.dumps(qwen_config(size, family), indent=2) + "\n")
        (qdir / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
        src = tokenizer_source()
        shutil.copyfile(src / "vocab.json", qdir / "vocab.json")
        shutil.copyfile(src / "merges.txt", qdir / "merges.txt")

        step("building modules")
        from exporters.model.config import build_modules

        torch.manual_seed(seed)
        model = build_modules(tmp / yaml_name, family, qdir)
        cal = Calibration()
        if calibrate and family == "cosyvoice3":
            cal.notes.append("cosyvoice3: upstream's own initialisation (no calibration written for v3 yet)")
        elif calibrate:
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
        step(f"writing stand-in campplus.onnx and {tokenizer_name}")
        from exporters.random.standins import write_campplus_standin, write_speech_tokenizer_standin

        write_campplus_standin(tmp / "campplus.onnx", seed)
        write_speech_tokenizer_standin(tmp / tokenizer_name, seed)
        (tmp / "random_init.json").write_text(
            json.dumps(
                {
                    "family": family,
                    "size": size,
                    "seed": seed,
                    "calibrated": calibrate and family != "cosyvoice3",
                    "arch": asdict(V3_ARCH[size] if family == "cosyvoice3" else ARCH[size]),
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
