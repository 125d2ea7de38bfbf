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
from exporters.random.config_v1 import V1_ARCH, render_v1_yaml
from exporters.random.config_v3 import V3_ARCH, render_v3_yaml
from specs.errors import ToolError

# family -> (yaml file name, speech tokenizer file name) of the official layout
FAMILY_FILES = {
    "cosyvoice1": ("cosyvoice.yaml", "speech_tokenizer_v1.onnx"),
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
        render = {"cosyvoice1": render_v1_yaml, "cosyvoice3": render_v3_yaml}.get(family, render_yaml)
        (tmp / yaml_name).write_text(render(size))
        qdir = tmp / "CosyVoice-BlankEN"
        if family != "cosyvoice1":  # CosyVoice 1 tokenizes with whisper's tiktoken: no Qwen2 directory
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
        if calibrate and family != "cosyvoice2":
            cal.notes.append(f"{family}: upstream's own initialisation (no calibration written for it yet)")
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
        write_speech_tokenizer_standin(tmp / tokenizer_name, seed, v1=family == "cosyvoice1")
        if family == "cosyvoice1":  # the SFT layout: named speakers -> x-vector, as upstream's spk2info.pt
            write_spk2info(tmp / "spk2info.pt", seed)
        (tmp / "random_init.json").write_text(
            json.dumps(
                {
                    "family": family,
                    "size": size,
                    "seed": seed,
                    "calibrated": calibrate and family == "cosyvoice2",
                    "arch": asdict({"cosyvoice1": V1_ARCH, "cosyvoice3": V3_ARCH}.get(family, ARCH)[size]),
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


# Speaker names of the CosyVoice-300M-SFT bundle's spk2info.pt (its seven built-in voices).
SFT_SPEAKERS = ("中文女", "中文男", "日语男", "粤语女", "英文女", "英文男", "韩语女")


def write_spk2info(path: Path, seed: int) -> None:
    """spk2info.pt as the SFT bundles ship it: speaker name -> {'embedding': (1, 192) float32 x-vector}."""
    import torch

    gen = torch.Generator().manual_seed(seed + 7)
    info = {name: {"embedding": torch.randn(1, 192, generator=gen) * 3.0} for name in SFT_SPEAKERS}
    torch.save(info, path)
