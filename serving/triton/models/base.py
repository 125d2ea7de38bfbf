"""What every generated model shares: its parameters, the pinned pack, tensor helpers and BLS calls."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import numpy as np
import triton_python_backend_utils as pb_utils

from specs.errors import ToolError
from specs.pack import DIGEST_FIELD, Pack

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class RemoteError(Exception):
    """A component model answered with an error: its message is passed on verbatim."""


class ModelArgs:
    def __init__(self, args: Mapping):
        self.config = json.loads(args["model_config"])
        self.name = self.config["name"]
        self.params = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}
        self.device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"

    def pack(self) -> Pack:
        """The pack the repository was generated from, refused if it changed since."""
        pack = Pack.open(self.params["pack_dir"])
        want, got = self.params["pack_manifest_sha256"], pack.manifest[DIGEST_FIELD]
        if got != want:
            raise ToolError(
                pack.root,
                f"changed since the Triton repository was generated (manifest {got[:12]}…, repository {want[:12]}…)",
                "regenerate it: tts-export --pack PACK --triton-repo DIR",
            )
        return pack

    def int(self, key: str) -> int:
        return int(self.params[key])


def get(request, name: str) -> np.ndarray | None:
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


def tensors(arrays: Mapping[str, np.ndarray]) -> list:
    return [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in arrays.items()]


def error_response(message: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def bls(model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """One synchronous call of another model of the repository (BLS)."""
    resp = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=tensors(inputs)).exec()
    if resp.has_error():
        raise RemoteError(resp.error().message())
    return {n: pb_utils.get_output_tensor_by_name(resp, n).as_numpy() for n in outputs}


def bls_stream(model: str, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """A decoupled model's responses as they arrive (the empty final response is skipped). Closing the generator
    early cancels the request where this Triton supports BLS cancellation."""
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=tensors(inputs))
    responses = request.exec(decoupled=True)
    try:
        for resp in responses:
            if resp.has_error():
                raise RemoteError(resp.error().message())
            got = {n: pb_utils.get_output_tensor_by_name(resp, n) for n in outputs}
            if any(t is None for t in got.values()):
                continue  # the final flag alone
            yield {n: t.as_numpy() for n, t in got.items()}
    finally:
        cancel = getattr(responses, "cancel", None)
        if cancel is not None:
            cancel()


def log_error(message: str) -> None:
    pb_utils.Logger.log_error(message)
