"""`speaker_embedding` (CAM++) and `speech_tokenizer`: the pack's two frontend ONNX models on a 16 kHz prompt,
through the runtime's own wrappers (runtime/frontend/prompt.py), so their outputs are tts-run's."""

from __future__ import annotations

import numpy as np

from runtime.frontend.prompt import SpeakerEmbedder, SpeechTokenizer
from serving.triton.models.base import ModelArgs, error_response, get, log_error, tensors
from specs.errors import ToolError

KINDS = {
    "campplus": (SpeakerEmbedder, "prompt_spk_embedding", np.float32),
    "speech_tokenizer": (SpeechTokenizer, "prompt_speech_tokens", np.int64),
}


class Model:
    def __init__(self, args):
        a = ModelArgs(args)
        pack = a.pack()
        kind = a.params["frontend"]
        cls, self.output, self.dtype = KINDS[kind]
        self.run = cls(pack.root / pack.manifest["frontend"][kind]["file"], a.device)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        out = []
        for r in requests:
            try:
                wav = np.ascontiguousarray(get(r, "reference_wav")[0], np.float32)
                out.append(pb_utils.InferenceResponse(tensors({self.output: self.run(wav).astype(self.dtype)})))
            except ToolError as e:
                out.append(error_response(e.message))
            except Exception as e:
                log_error(f"{self.output}: {type(e).__name__}: {e}")
                out.append(error_response(f"{self.output} | internal error ({type(e).__name__}: {e})"))
        return out

    def finalize(self):
        pass
