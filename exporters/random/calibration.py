"""Calibration of random weights so that random bundles behave like trained ones where the tests look.

Random weights at upstream's init make HiFT nearly mel-independent (F0 < 1 Hz everywhere: all frames
unvoiced, no harmonic source), so bundles are calibrated: the F0 head is set to ~110 Hz mean with most
frames voiced, the vocoder's magnitude channels get a speech-like spectral tilt and a shift so the
waveform std is ~0.08 without clipping, the LLM head is sharpened so sampling is not near-uniform, and
constant-initialised tensors (unit norms, zero biases) get small jitter so a dropped bias or norm shows up
in parity tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporters.oracles.flow import upstream_flow_mel


@dataclass
class Calibration:
    """What calibration did, recorded next to the bundle (calibration.json)."""

    f0_mean_hz: float = 0.0
    voiced_ratio: float = 0.0
    wav_std: float = 0.0
    wav_peak: float = 0.0
    spectral_centroid_hz: float = 0.0
    llm_logit_std: float = 0.0
    eos_top1_ratio: float = 0.0
    notes: list = field(default_factory=list)


def jitter_constant_tensors(module, gen) -> None:
    """Tensors that upstream initialises to a constant (norm weights 1, biases 0) get small noise."""
    import torch

    with torch.no_grad():
        for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            flat = p.detach().reshape(-1)
            if flat.numel() > 1 and bool(torch.all(flat == flat[0])):
                p.add_(torch.randn(p.shape, generator=gen) * (0.05 if float(flat[0]) != 0.0 else 0.02))


def calibrate_llm_head(llm, gen, cal: Calibration, eos_gap: float = 5, special_penalty: float = 30.0) -> None:
    """Make the speech-token head behave like a trained one: logits std ~3 (a peaked distribution); eos
    about `eos_gap` below the best other token on average, so an utterance ends some tokens after min_len
    instead of always running to max_len; the other special ids (6562 and the bi-streaming fill token) far
    down, since upstream raises when it samples them outside their place (bi-streaming forces fill)."""
    import torch

    with torch.no_grad():
        x = torch.randn(1, 64, llm.llm_input_size, generator=gen)
        h = llm.llm.model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
        logits = llm.llm_decoder(h)
        scale = 3.0 / float(logits.std())
        llm.llm_decoder.weight.mul_(scale)
        llm.llm_decoder.bias.mul_(scale)
        logits = llm.llm_decoder(h)[0]
        eos = int(llm.speech_token_size)
        best_other = logits[:, :eos].max(dim=1).values
        llm.llm_decoder.bias[eos] += float((best_other - eos_gap - logits[:, eos]).mean())
        llm.llm_decoder.bias[eos + 1 :] -= special_penalty
        logits = llm.llm_decoder(h)[0]
        cal.llm_logit_std = float(logits[:, :eos].std())
        cal.eos_top1_ratio = float((logits.argmax(dim=1) == eos).float().mean())


def set_f0_classifier(f0_predictor, mel, mean_hz: float, std_hz: float, std_floor: float = 1e-12) -> None:
    """Rescale an F0 predictor's classifier (CosyVoice2's or 3's: condnet -> classifier) in place so that its
    pre-abs output over `mel` has mean `mean_hz` and std `std_hz`. Call under torch.no_grad()."""
    feats = f0_predictor.condnet(mel).transpose(1, 2)  # (1, T, C)
    raw = f0_predictor.classifier(feats).squeeze(-1)
    scale = std_hz / max(float(raw.std()), std_floor)
    f0_predictor.classifier.weight.mul_(scale)
    f0_predictor.classifier.bias.mul_(scale)
    f0_predictor.classifier.bias.add_(mean_hz - float(f0_predictor.classifier(feats).squeeze(-1).mean()))


def calibrate_hift(
    flow, hift, gen, cal: Calibration, target_f0: float = 110.0, target_std: float = 0.08, tilt: float = 1.0
) -> None:
    """F0 head to ~110 Hz (mostly voiced); a spectral tilt of `tilt` nepers per ISTFT bin on the log-magnitude
    bias, so the waveform is low-pass like speech (centroid ~1.2 kHz) rather than white noise, on which a
    click at a chunk boundary could not be told from the signal; then waveform std to ~0.08 (peaks stay below
    the 0.99 clamp)."""
    import torch

    mel = upstream_flow_mel(flow, gen)
    with torch.no_grad():
        pred = hift.f0_predictor
        set_f0_classifier(pred, mel, target_f0, 20.0, std_floor=1e-6)  # F0 spread ~20 Hz around the mean
        f0 = pred(mel)
        cal.f0_mean_hz = float(f0.mean())
        cal.voiced_ratio = float((f0 > 10).float().mean())
        # The ISTFT is linear in the complex spectrum and the magnitude is exp(conv_post[:n_mag]) (kept below
        # its 1e2 clip), so shifting bin k's bias by s_k scales that bin's contribution y_k exactly: the
        # output is sum_k exp(s_k) y_k. Measure each y_k once, then pick shifts for a speech-like result.
        n_mag = hift.istft_params["n_fft"] // 2 + 1
        shifts = speech_like_shifts(bin_contributions(hift, mel, n_mag), hift.sampling_rate, target_std)
        hift.conv_post.bias[:n_mag] += shifts
        torch.manual_seed(0)
        wav, _ = hift.inference(speech_feat=mel)
        cal.wav_std, cal.wav_peak = float(wav.std()), float(wav.abs().max())
        spectrum = torch.fft.rfft(wav[0]).abs()
        freqs = torch.fft.rfftfreq(wav.shape[1], 1.0 / hift.sampling_rate)
        cal.spectral_centroid_hz = float((spectrum * freqs).sum() / spectrum.sum())


def bin_contributions(hift, mel, n_mag: int):
    """(n_mag, samples): the unclamped vocoder output with only ISTFT bin k's magnitude kept, for each k."""
    import torch

    bias = hift.conv_post.bias
    base = bias.detach().clone()
    limit, hift.audio_limit = hift.audio_limit, float("inf")
    out = []
    try:
        for k in range(n_mag):
            bias[:n_mag] = base[:n_mag] - 60.0  # exp(-60): that bin contributes nothing
            bias[k] = base[k]
            torch.manual_seed(0)
            wav, _ = hift.inference(speech_feat=mel)
            out.append(wav[0].double())
    finally:
        bias.copy_(base)
        hift.audio_limit = limit
    return torch.stack(out)


def speech_like_shifts(contrib, sample_rate: int, target_std: float):
    """Bias shifts s_k giving sum_k exp(s_k) contrib_k a speech-like shape: small DC, spectral centroid
    near 1.3 kHz, std `target_std`. Every bin is first brought to unit RMS, then a tilt away from the loudest
    bin and an extra DC cut are searched on a grid (all exact: the output is linear in exp(s_k))."""
    import torch

    rms = contrib.pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
    unit = -torch.log(rms)
    freqs = torch.fft.rfftfreq(contrib.shape[1], 1.0 / sample_rate, dtype=torch.float64)
    k = torch.arange(contrib.shape[0], dtype=torch.float64)
    best = None
    for start in (unit, torch.zeros_like(unit)):  # equalised bins, or the bins as they are
        for tilt in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
            for dc_cut in (0.0, 2.0, 4.0, 8.0, 16.0):
                for peak_bin in (0, 1, 2):
                    s = start - tilt * (k - peak_bin).abs()
                    s[0] -= dc_cut
                    wav = (torch.exp(s)[:, None] * contrib).sum(dim=0)
                    std = float(wav.std())
                    spec = torch.fft.rfft(wav).abs()
                    centroid = float((spec * freqs).sum() / spec.sum())
                    dc = abs(float(wav.mean())) / std
                    crest = float(wav.abs().max()) / std  # peaks must stay below the clamp at target_std
                    score = abs(centroid - 1300.0) / 1300.0 + 10.0 * dc + max(0.0, crest - 0.9 / target_std)
                    if best is None or score < best[0]:
                        best = (score, s, wav)
    _, s, wav = best
    s = s + float(torch.log(torch.tensor(target_std / float(wav.std()))))
    return s.to(torch.float32)
