"""A CosyVoice model bundle on disk: up-front validation and strict loading of the state dicts.

Every expected file is checked before any work starts; missing, truncated or wrong-shaped files give a
`ToolError` naming the file and what was expected. Known official files can be verified by size and
sha256 (`--verify-official`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exporters.model.config import BuiltModel, build_modules, check_family, detect_family
from specs.errors import ToolError
from specs.pack import sha256_file

QWEN_DIR = "CosyVoice-BlankEN"
# What each family's bundle must hold (relative paths). model.safetensors is not needed: llm.pt holds
# every Qwen2 weight and the backbone is built from config.json alone.
REQUIRED = {
    # CosyVoice-300M / -SFT / -Instruct. The text tokenizer is whisper's multilingual tiktoken (from the
    # openai-whisper package, not the bundle); spk2info.pt is optional (SFT / Instruct speakers).
    "cosyvoice1": [
        "cosyvoice.yaml",
        "llm.pt",
        "flow.pt",
        "hift.pt",
        "campplus.onnx",
        "speech_tokenizer_v1.onnx",
    ],
    "cosyvoice2": [
        "cosyvoice2.yaml",
        "llm.pt",
        "flow.pt",
        "hift.pt",
        "campplus.onnx",
        "speech_tokenizer_v2.onnx",
        f"{QWEN_DIR}/config.json",
        f"{QWEN_DIR}/vocab.json",
        f"{QWEN_DIR}/merges.txt",
        f"{QWEN_DIR}/tokenizer_config.json",
    ],
    "cosyvoice3": [
        "cosyvoice3.yaml",
        "llm.pt",
        "flow.pt",
        "hift.pt",
        "campplus.onnx",
        "speech_tokenizer_v3.onnx",
        f"{QWEN_DIR}/config.json",
        f"{QWEN_DIR}/vocab.json",
        f"{QWEN_DIR}/merges.txt",
        f"{QWEN_DIR}/tokenizer_config.json",
    ],
}
# Files used when present (hashed into the manifest like the required ones).
OPTIONAL = {"cosyvoice1": ["spk2info.pt"]}
# Official CosyVoice2-0.5B files: size in bytes, sha256 (public LFS pointers).
OFFICIAL = {
    "cosyvoice2": {
        "hift.pt": (83390254, "3386cc880324d4e98e05987b99107f49e40ed925b8ecc87c1f4939432d429879"),
        "flow.pt": (450575567, "ff4c2f867674411e0a08cee702996df13fa67c1cd864c06108da88d16d088541"),
        "llm.pt": (2023316821, "b144ef55b51ce8cfb79a73c90dbba0bdaba4e451c0ebcfab20f769264f84a608"),
        "speech_tokenizer_v2.onnx": (496082973, "d43342aa12163a80bf07bffb94c9de2e120a8df2f9917cd2f642e7f4219c6f71"),
        "campplus.onnx": (28303423, "a6ac6a63997761ae2997373e2ee1c47040854b4b759ea41ec48e4e42df0f4d73"),
        "cosyvoice2.yaml": (7330, None),
    },
    # Fun-CosyVoice3-0.5B-2512 at HF revision 29e01c4e (two third-party manifests, cross-checked; shared/data).
    "cosyvoice3": {
        "cosyvoice3.yaml": (6934, "f5a6b2c6f05139d0f18861a1fe506f751e787026b77c05f7e8fef9f8a4405965"),
        "llm.pt": (2024669519, "69f43bd545131c30e98947fb360ea8b4dc9916d8e83dded7757c7ea4f5a24970"),
        "flow.pt": (1329116148, "a6fab32a7825e5b0bc855ddd948f8db9370b0a786fbc249caa4595e95b608e4b"),
        "hift.pt": (83202622, "b279d7641eb97ae55b3b540cfba4f953c26492a2df758328a89a4d007ab87a65"),
        "campplus.onnx": (28303423, "a6ac6a63997761ae2997373e2ee1c47040854b4b759ea41ec48e4e42df0f4d73"),
        "speech_tokenizer_v3.onnx": (969451503, "23236a74175dbdda47afc66dbadd5bcb41303c467a57c261cb8539ad9db9208d"),
        f"{QWEN_DIR}/config.json": (659, "168aa1bd401abc3bc262ba15ba4e499627a8b4e006e9d050b47c22de20660185"),
        f"{QWEN_DIR}/merges.txt": (1402109, "ac8ff86a72bee70828fbc1119bc4398c6f3a9a6e490d7b0dbe917be025478bd0"),
        f"{QWEN_DIR}/tokenizer_config.json": (1287, "482bd979881423375ca5414e4e0d94cd7c5349dbb17fffd46b4d36d71e62a1bc"),
        f"{QWEN_DIR}/vocab.json": (2776833, "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"),
    },
}
OFFICIAL["cosyvoice1"] = {  # one file shared by every CosyVoice-300M variant (the others differ per variant)
    "campplus.onnx": OFFICIAL["cosyvoice2"]["campplus.onnx"],
}
# llm.pt of the official CosyVoice-300M-Instruct (current and previous upload): an instruct-trained LLM.
INSTRUCT_LLM_SHA256 = {
    "ef23893d68b93406eae04719a3b800488921e08b394624e9a5ba69bea3a59a13",
    "1349d5936350dbcaa7548f1b318f2e4251af74a4d1e206682187d7903f3508bb",
}
# Other official revisions seen in public (same file name, other content): accepted by --verify-official.
OFFICIAL_ALTERNATIVES = {
    "cosyvoice2": {
        "hift.pt": {"1d4af0d661a416c69544eec83ff9c070dc80c37ee53ef44af3a37d910c95bc21"},
    },
}


@dataclass
class Bundle:
    root: Path
    family: str
    yaml_path: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def qwen_dir(self) -> Path:
        return self.root / QWEN_DIR

    @classmethod
    def open(cls, root: str | Path) -> Bundle:
        """Check the layout up front: the yaml's family, then every required file at once."""
        root = Path(root)
        if not root.is_dir():
            raise ToolError(root, "model directory does not exist", "a CosyVoice bundle such as CosyVoice2-0.5B/")
        family, yaml_path = detect_family(root)
        check_family(yaml_path, family, yaml_path.read_text(errors="replace"))
        missing = [rel for rel in REQUIRED[family] if not (root / rel).is_file()]
        if missing:
            raise ToolError(
                root,
                f"bundle is missing {', '.join(missing)}",
                f"a {family} bundle holds {', '.join(REQUIRED[family])}",
            )
        empty = [rel for rel in REQUIRED[family] if (root / rel).stat().st_size == 0]
        if empty:
            raise ToolError(root / empty[0], "is empty", "the file as shipped with the bundle")
        present = REQUIRED[family] + [rel for rel in OPTIONAL.get(family, ()) if (root / rel).is_file()]
        return cls(root=root, family=family, yaml_path=yaml_path, files={rel: root / rel for rel in present})

    def hashes(self) -> dict[str, dict]:
        """size + sha256 of every bundle file, for the manifest."""
        return {rel: {"size": p.stat().st_size, "sha256": sha256_file(p)} for rel, p in self.files.items()}

    def verify_official(self) -> list[str]:
        """Compare known official files by size and sha256; returns the files that were checked."""
        checked = []
        for rel, (size, digest) in OFFICIAL.get(self.family, {}).items():
            path = self.root / rel
            got_size = path.stat().st_size
            alternatives = OFFICIAL_ALTERNATIVES.get(self.family, {}).get(rel, set())
            if got_size != size and not alternatives:
                raise ToolError(
                    path,
                    f"is {got_size} bytes",
                    f"the official {rel} is {size} bytes (truncated download? re-download it)",
                )
            if digest is not None:
                got = sha256_file(path)
                if got != digest and got not in alternatives:
                    raise ToolError(path, f"has sha256 {got[:16]}…", f"the official {rel} has {digest[:16]}…")
            checked.append(rel)
        return checked

    def instruct(self, hashes: dict[str, dict]) -> bool:
        """CosyVoice 1 only: whether the LLM is the instruct-trained one. Its weights have the same shapes as the
        SFT model's, so: the official Instruct llm.pt by sha256, or a bundle directory named like upstream's
        (`...-Instruct`, the rule upstream's CosyVoice class used)."""
        if self.family != "cosyvoice1":
            return False
        return hashes.get("llm.pt", {}).get("sha256") in INSTRUCT_LLM_SHA256 or "-Instruct" in self.root.resolve().name

    def build(self, with_llm: bool = True) -> BuiltModel:
        """Build the upstream modules from the yaml and load llm.pt / flow.pt / hift.pt strictly."""
        model = build_modules(self.yaml_path, self.family, self.qwen_dir, with_llm=with_llm)
        if with_llm:
            load_state_dict_strict(model.llm, self.root / "llm.pt")
        load_state_dict_strict(model.flow, self.root / "flow.pt")
        load_state_dict_strict(model.hift, self.root / "hift.pt", strip_prefix="generator.")
        return model


def read_state_dict(path: Path) -> dict:
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ToolError(path, "is missing") from None
    except Exception as e:  # truncated zip, not a checkpoint, pickle refused
        raise ToolError(
            path,
            f"cannot be read as a PyTorch state dict ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
            "the .pt file as shipped (truncated or corrupted download?)",
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise ToolError(path, f"holds a {type(sd).__name__}, not a state dict", "a dict of parameter name -> tensor")
    return sd


def load_state_dict_strict(module, path: Path, strip_prefix: str | None = None) -> None:
    """Load with upstream's key names; any missing, unexpected or wrong-shaped key is a ToolError."""
    sd = read_state_dict(path)
    if strip_prefix:
        sd = {k[len(strip_prefix) :] if k.startswith(strip_prefix) else k: v for k, v in sd.items()}
    # Old-style weight-norm keys (weight_g / weight_v) are converted by torch's load hook, so compare
    # against the keys the module accepts after that conversion.
    want = module.state_dict()
    normalized = {_weight_norm_key(k): v for k, v in sd.items()}
    missing = [k for k in want if k not in normalized]
    unexpected = [k for k in normalized if k not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise ToolError(
            path,
            "does not match the model the yaml declares: " + "; ".join(parts),
            "the state dict that belongs with this bundle's yaml",
        )
    for k, v in normalized.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise ToolError(
                path, f"tensor {k} has shape {list(v.shape)}", f"the yaml's model expects {list(want[k].shape)}"
            )
    module.load_state_dict(sd, strict=True)
    module.eval()


def _weight_norm_key(k: str) -> str:
    if k.endswith(".weight_g"):
        return k[: -len("weight_g")] + "parametrizations.weight.original0"
    if k.endswith(".weight_v"):
        return k[: -len("weight_v")] + "parametrizations.weight.original1"
    return k
