"""The CosyVoice3 text tokenizer: Qwen2 BPE plus the 278 special tokens upstream's CosyVoice3Tokenizer adds, the
list carried by the pack (frontend/added_special_tokens.json), equal to upstream's encoding on our own corpus."""

from __future__ import annotations

import pytest

from runtime.frontend.text import COSYVOICE2_SPECIAL_TOKENS, TextTokenizer

CORPUS = [
    "You are a helpful assistant.<|endofprompt|>Hello there, how are you today?",
    "希望你以后能够做的比我还好呦。<|endofprompt|>收到好友从远方寄来的生日礼物。",
    "[breath] I [AA1] think [laughter]so[/laughter] <strong>really</strong> [quick_breath]!",
    "[iǎng][uǎi] [zh][ǜ] mixed [HH][AH0][L][OW1] phones, <|endofsystem|> and <|im_start|>user<|im_end|>",
    "Numbers 1234567, emoji 😀🎉, tabs\tand\nnewlines, ‘quotes’ — dashes… and ＦＵＬＬＷＩＤＴＨ.",
    "[AA][AA0][AA1][AA2]" * 5 + "<|endoftext|>",
    "",
]


@pytest.mark.oracle
def test_v3_specials_and_encoding_equal_upstream(tiny_v3_bundle):
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    from exporters.model.bundle import Bundle
    from exporters.pipeline.pack import added_special_tokens

    bundle = Bundle.open(tiny_v3_bundle)
    added = added_special_tokens(bundle)
    q = bundle.qwen_dir
    ours = TextTokenizer.from_files(q / "vocab.json", q / "merges.txt", q / "tokenizer_config.json", added)
    up = get_qwen_tokenizer(str(q), skip_special_tokens=True, version="cosyvoice3")
    assert len(ours) == len(up.tokenizer) == 151924  # 151643 BPE + 3 Qwen2 + 278 CosyVoice3 specials
    assert len([t for t in added if t not in ("<|im_start|>", "<|im_end|>")]) == 278
    for text in CORPUS:
        assert ours.encode(text) == up.encode(text), text
    assert ours.special_tokens["[ǜ]"] == up.tokenizer.convert_tokens_to_ids("[ǜ]") == 151923


@pytest.mark.oracle
def test_v2_list_is_upstreams_cosyvoice2_list(tiny_bundle):
    """The constant kept for packs written before the list was shipped is upstream's CosyVoice2 list."""
    from exporters.model.bundle import Bundle
    from exporters.pipeline.pack import added_special_tokens

    added = [t for t in added_special_tokens(Bundle.open(tiny_bundle)) if t not in ("<|im_start|>", "<|im_end|>")]
    assert tuple(added) == COSYVOICE2_SPECIAL_TOKENS
