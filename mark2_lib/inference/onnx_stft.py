"""Log-mel of STFT frames as a few matrix products, for the ONNX graph (`onnx_graph.ExportGraph`).

The real DFT of a frame is factored in two stages (the "four-step" FFT): with n_fft = P * Q and a
sample index n = Q * a + b (0 <= a < P, 0 <= b < Q), the first stage takes a P-point DFT over a for
every b; the second, for each first-stage bin k1, a Q-point sum over b whose twiddles W^(b * k1) are
folded into its matrix, giving bins k = k1 + P * k2. A real frame's first stage has P real outputs
(bins 0 and P / 2 real, then re and im of bins 1 .. P / 2 - 1), and bin P - k1 is the conjugate of k1,
so one second-stage matrix serves each pair {k1, P - k1} ("slot"; slot 0 holds the real bins 0 and
P / 2) and computes only the bins up to n_fft / 2 that a mel band reads. For the student's n_fft 256 =
16 x 16 that is about 15k multiply-adds a frame where a dense DFT of folded frames takes 33k.

The frames are transposed once to `[samples, frames]`, so that each stage is one (batched) matrix
product over all frames. PyTorch inference does not use this module (it runs torch.fft.rfft).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def dft_factors(n_fft: int) -> tuple[int, int]:
    """(P, Q), n_fft = P * Q: P the smallest even divisor with P² >= n_fft (Q = 1 for n_fft = 2 x prime)."""
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft={n_fft}: the factored DFT takes an even n_fft")
    p = next(d for d in range(2, n_fft + 1, 2) if n_fft % d == 0 and d * d >= n_fft)
    return p, n_fft // p


def factored_bases(n_fft: int, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two stages and the mel bank (`fb` `[n_fft // 2 + 1, n_mels]`) as matrices: (first `[P, P]`, rows
    (slot, part) over a; second `[P // 2, O, 2 * Q]`, per slot its O outputs over (part, b); bank
    `[P // 2 * O, n_mels]`, each output's band weights, for the re and the im output of a bin alike)."""
    p, q = dft_factors(n_fft)
    a, b = torch.arange(p, dtype=torch.float64), torch.arange(q)
    first = torch.zeros(p, p, dtype=torch.float64)
    first[0], first[1] = 1.0, torch.cos(math.pi * a)                   # slot 0: bins 0 and P / 2, both real
    for j in range(1, p // 2):                                          # slot j: re and im of bin j
        first[2 * j], first[2 * j + 1] = torch.cos(2 * math.pi * a * j / p), -torch.sin(2 * math.pi * a * j / p)
    used = fb.abs().sum(dim=1) > 0
    slots = []
    for j in range(p // 2):
        outputs = []
        for k1 in ((0, p // 2) if j == 0 else (j, p - j)):
            for k in range(k1, n_fft // 2 + 1, p):
                if not used[k]:
                    continue
                angle = 2 * torch.pi * (b * k % n_fft).double() / n_fft  # b * k mod n_fft, exactly
                c, s, z = torch.cos(angle), torch.sin(angle), torch.zeros(q, dtype=torch.float64)
                if j == 0:   # one real input (part 0: bin 0's, part 1: bin P / 2's): re = y c, im = -y s
                    re, im = (torch.cat([c, z]), torch.cat([-s, z])) if k1 == 0 else (torch.cat([z, c]), torch.cat([z, -s]))
                elif k1 == j:  # y = r + i m: re = r c + m s, im = m c - r s
                    re, im = torch.cat([c, s]), torch.cat([-s, c])
                else:          # bin P - j sees the conjugate r - i m: re = r c - m s, im = -m c - r s
                    re, im = torch.cat([c, -s]), torch.cat([-s, -c])
                outputs.append((re, k))
                if k % (n_fft // 2):                                    # bins 0 and n_fft / 2 are real
                    outputs.append((im, k))
        slots.append(outputs)
    width = max(len(outputs) for outputs in slots)
    second = torch.zeros(p // 2, width, 2 * q, dtype=torch.float64)
    bank = torch.zeros(p // 2, width, fb.shape[1])
    for j, outputs in enumerate(slots):
        for o, (row, k) in enumerate(outputs):
            second[j, o], bank[j, o] = row, fb[k]
    return first.float(), second.float(), bank.reshape(-1, fb.shape[1])


class FactoredLogMel(nn.Module):
    """Windowed STFT frames `[N, F, width >= n_fft]` (the first n_fft samples read) -> log-mel `[N, F, n_mels]`
    in dB, 10 · log10(max(power, 1e-10)) as `audio.LogMel`, through the factored DFT (`factored_bases`)."""

    def __init__(self, n_fft: int, window: torch.Tensor, fb: torch.Tensor):
        super().__init__()
        self.n_fft = n_fft
        self.p, self.q = dft_factors(n_fft)
        first, second, bank = factored_bases(n_fft, fb)
        for name, value in (("window", window.clone()), ("first", first), ("second", second), ("bank", bank)):
            self.register_buffer(name, value)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, f, width = frames.shape
        p, q = self.p, self.q
        t = frames.reshape(n * f, width).transpose(0, 1)                # [width, N * F]: sample n = Q * a + b
        if width % q or width // q < p:
            t = t[:self.n_fft]
        rows = t.shape[0]                                                # the window is 0 past n_fft, and so
        t = t * nn.functional.pad(self.window, (0, rows - self.n_fft)).unsqueeze(1)  # is the first stage
        first = nn.functional.pad(self.first, (0, rows // q - p))
        y = torch.matmul(first, t.reshape(rows // q, q * n * f))         # [P, Q * N * F]: (slot, part), b
        out = torch.matmul(self.second, y.reshape(p // 2, 2 * q, n * f))  # [P // 2, O, N * F]
        power = (out * out).reshape(-1, n * f)
        mel = torch.matmul(power.transpose(0, 1), self.bank)            # [N * F, n_mels]
        return mel.clamp_min(1e-10).log10().mul(10.0).reshape(n, f, mel.shape[1])
