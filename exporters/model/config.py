"""Read a bundle's yaml and build the upstream llm / flow / hift modules from it.

Only the inference objects are built: the shipped yaml also declares training objects (GAN
discriminators, data pipeline) that need real torchaudio. We keep the top-level scalar parameters,
`llm`, `flow`, `hift` and the `feat_extractor` partial, and hand that to HyperPyYAML, so every size comes
from the bundle's own yaml.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from specs.errors import ToolError

# family -> (yaml file name, expected classes of llm / flow / hift), as upstream's get_model_type checks.
FAMILIES = {
    "cosyvoice1": ("cosyvoice.yaml", ("TransformerLM", "MaskedDiffWithXvec", "HiFTGenerator")),
    "cosyvoice2": ("cosyvoice2.yaml", ("Qwen2LM", "CausalMaskedDiffWithXvec", "HiFTGenerator")),
    "cosyvoice3": ("cosyvoice3.yaml", ("CosyVoice3LM", "CausalMaskedDiffWithDiT", "CausalHiFTGenerator")),
}
# Families whose modules this version builds and exports (graphs: exporters/graphs/__init__.py REGISTRIES).
SUPPORTED_FAMILIES = ("cosyvoice1", "cosyvoice2", "cosyvoice3")
MODULE_KEYS = ("llm", "flow", "hift")
EXTRA_KEYS = ("feat_extractor",)
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)$")
_CLASS_OF = re.compile(r"^(llm|flow|hift)\s*:\s*!new:([\w.]+)", re.M)


def detect_family(model_dir: Path) -> tuple[str, Path]:
    """Which CosyVoice generation a bundle is, by its yaml file name (as upstream's AutoModel)."""
    found = [(fam, model_dir / name) for fam, (name, _) in FAMILIES.items() if (model_dir / name).is_file()]
    if not found:
        names = ", ".join(name for name, _ in FAMILIES.values())
        raise ToolError(model_dir, "no model yaml found", f"a CosyVoice bundle holds one of {names}")
    if len(found) > 1:
        raise ToolError(
            model_dir, f"holds several model yamls ({', '.join(p.name for _, p in found)})", "one bundle, one yaml"
        )
    return found[0]


def declared_classes(yaml_text: str) -> dict[str, str]:
    return {key: cls.rsplit(".", 1)[-1] for key, cls in _CLASS_OF.findall(yaml_text)}


def check_family(yaml_path: Path, family: str, yaml_text: str) -> None:
    """The yaml must declare the classes its file name promises (upstream asserts the same)."""
    want = dict(zip(MODULE_KEYS, FAMILIES[family][1]))
    got = declared_classes(yaml_text)
    if got != want:
        other = next((f for f, (_, cls) in FAMILIES.items() if dict(zip(MODULE_KEYS, cls)) == got), None)
        what = f"declares a {other} model" if other else "declares other model classes"
        found = ", ".join(f"{k} {got.get(k, '(missing)')}" for k in MODULE_KEYS)
        expected = ", ".join(f"{k} {v}" for k, v in want.items())
        raise ToolError(yaml_path, f"{what} ({found})", f"a {family} yaml declares {expected}")
    if family not in SUPPORTED_FAMILIES:
        raise ToolError(
            yaml_path,
            f"{family} bundles are not supported by this version",
            f"supported: {', '.join(SUPPORTED_FAMILIES)}",
        )


def inference_yaml(yaml_text: str, keys: tuple[str, ...] = MODULE_KEYS + EXTRA_KEYS) -> str:
    """Keep one-line top-level parameters plus the blocks of `keys` (default llm/flow/hift/feat_extractor)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in yaml_text.splitlines():
        m = _TOP_KEY.match(line)
        if m:
            blocks.append((m.group(1), [line]))
        elif blocks:
            blocks[-1][1].append(line)
    kept = []
    for key, lines in blocks:
        body = [ln for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")]
        value = lines[0].split(":", 1)[1].strip()
        scalar = not body and not value.startswith(("!new:", "!name:", "!apply:", "["))
        if key in keys or scalar:
            kept.append("\n".join(lines))
    return "\n".join(kept) + "\n"


def load_yaml_entry(yaml_path: Path, key: str):
    """One top-level entry of a bundle's yaml (e.g. `get_tokenizer`), built by HyperPyYAML with the yaml's scalar
    parameters; None when the yaml has no such entry."""
    from hyperpyyaml import load_hyperpyyaml

    text = yaml_path.read_text()
    blocks = inference_yaml(text, keys=(key,))
    if not re.search(rf"^{re.escape(key)}\s*:", blocks, re.M):
        return None
    try:
        return load_hyperpyyaml(blocks)[key]
    except Exception as e:  # unknown classes, bad arguments
        raise ToolError(yaml_path, f"entry {key!r} cannot be built ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def qwen_from_config_only():
    """`Qwen2Encoder.__init__` calls `Qwen2ForCausalLM.from_pretrained(dir)`, which needs the 988 MB
    `model.safetensors`. `llm.pt` overwrites every Qwen2 weight (strict load), so build from `config.json`
    alone."""
    import cosyvoice.llm.llm as llm_mod
    from transformers import Qwen2Config, Qwen2ForCausalLM

    class _FromConfig:
        @staticmethod
        def from_pretrained(path, **_):
            return Qwen2ForCausalLM(Qwen2Config.from_pretrained(path))

    saved = llm_mod.Qwen2ForCausalLM
    llm_mod.Qwen2ForCausalLM = _FromConfig
    try:
        yield
    finally:
        llm_mod.Qwen2ForCausalLM = saved


@dataclass
class BuiltModel:
    family: str
    llm: object
    flow: object
    hift: object
    feat_extractor: dict  # keyword arguments of matcha's mel_spectrogram for the prompt mel
    sample_rate: int
    sampling: dict  # ras_sampling keyword arguments


def build_modules(yaml_path: Path, family: str, qwen_dir: Path, with_llm: bool = True) -> BuiltModel:
    """Build llm / flow / hift from the yaml with upstream classes (weights still random)."""
    from exporters.model.upstream import require_upstream

    require_upstream()
    from hyperpyyaml import load_hyperpyyaml

    text = yaml_path.read_text()
    check_family(yaml_path, family, text)
    text = inference_yaml(text)
    if not with_llm:
        text = re.sub(r"^llm:.*?(?=^\S)", "", text, flags=re.M | re.S)
    try:
        with qwen_from_config_only():
            # CosyVoice 1 has no Qwen2 backbone (and its yaml no qwen_pretrain_path to override)
            overrides = {} if family == "cosyvoice1" else {"qwen_pretrain_path": str(qwen_dir)}
            cfg = load_hyperpyyaml(text, overrides=overrides)
    except ToolError:
        raise
    except OSError as e:
        raise ToolError(
            qwen_dir, f"cannot build the Qwen2 backbone ({e})", "CosyVoice-BlankEN/config.json of a Qwen2 model"
        ) from None
    except Exception as e:  # hyperpyyaml/ruamel errors, unknown classes, bad arguments
        raise ToolError(
            yaml_path,
            f"cannot be built with the upstream classes ({type(e).__name__}: {e})",
            "the yaml shipped with the bundle",
        ) from None
    for key in MODULE_KEYS if with_llm else MODULE_KEYS[1:]:
        if key not in cfg:
            raise ToolError(yaml_path, f"has no '{key}' entry", "llm, flow and hift are declared")
    feat = cfg.get("feat_extractor")
    feat_kwargs = dict(getattr(feat, "keywords", {}) or {})
    sampling = dict(getattr(cfg["llm"].sampling, "keywords", {}) or {}) if with_llm else {}
    for m in (cfg.get("llm"), cfg["flow"], cfg["hift"]):
        if m is not None:
            m.eval()
    return BuiltModel(
        family=family,
        llm=cfg.get("llm"),
        flow=cfg["flow"],
        hift=cfg["hift"],
        feat_extractor=feat_kwargs,
        sample_rate=int(cfg["sample_rate"]),
        sampling=sampling,
    )
