"""`tts-export --pack PACK --triton-repo DIR [--llm local|openai=URL]`: a Triton model repository from a pack.

    DIR/cosyvoice2/          decoupled, async Python-backend orchestrator with upstream's I/O (target_text,
                             reference_wav [16 kHz], reference_wav_len, reference_text -> waveform), plus seed,
                             pcm16 and sample_offset; runs runtime.session.TtsSession (the one chunk schedule)
                             with its flow/vocoder/LLM/frontend calls sent to the models below
    DIR/token2wav/           stateless flow + HiFT call: HiFT's caches come in and go out as tensors, so any
                             instance on any GPU serves any chunk of any stream
    DIR/speaker_embedding/   CAM++ x-vector        DIR/speech_tokenizer/   prompt speech tokens
    DIR/llm/                 (--llm local) the pack's LLM graph, one speech token per streamed response

The generator is serving/triton/repo.py, the models' code serving/triton/models/, the test server launcher
serving/triton/server.py, the test client serving/triton/client.py.
"""

from serving.triton.repo import write_triton_repo

__all__ = ["write_triton_repo"]
