"""Runtime frontend: text and a prompt WAV -> model inputs (numpy, onnxruntime, tokenizers, soundfile, soxr,
kaldi-native-fbank). Mirrors upstream CosyVoiceFrontEnd; never imports torch or the upstream package.

- text.py: TextTokenizer (Qwen2 BPE + CosyVoice2 special tokens)
- normalize.py, number_words.py: text_normalize without wetext/ttsfrd, split_paragraph
- audio.py: prompt WAV loading and checks, soxr resampling
- dsp.py: STFT framing, windows, Slaney mel filters (shared by the mel features)
- features.py: kaldi fbank (CAM++), whisper log-mel (speech tokenizer), prompt mel (flow)
- prompt.py: PromptFrontend (campplus + speech tokenizer ORT sessions, v2 prompt alignment)
"""
