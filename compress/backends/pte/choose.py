"""Per-channel or per-tensor weight scales for a static int8 ``.pte``: the smaller program when it is as faithful.

An XNNPACK program with per-channel weights keeps, per output channel, a weight scale and a bias scale in the
program and the scales again in the XNNPACK graph (about 20 bytes a channel). On a small model that is several per
cent of the file: mnist_cnn (93k parameters, 234 channels) is 105,000 bytes per-channel and 100,392 per-tensor, and
ExecuTorch's own quantizer defaults are per-tensor. So when per-channel scales are asked for, both are quantized,
their int8 graphs run in PyTorch on the first calibration samples beside the fp32 model, and per-tensor is kept when
it is as faithful (compress.backends.faithful: no lower top-1 agreement, at most 3 dB lower SQNR, same cosine).

Example:
    >>> quantized, per_channel, note = smaller_scales_if_as_faithful(quantize, module, calib_data, example)
    >>> per_channel, note[:36]
    (False, 'weight scales per tensor: as faithful')
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from torch import nn

from compress.data import Dataset
from compress.backends.faithful import FIDELITY_SAMPLES, as_faithful, output_fidelity
from compress.backends.pt2e import batch_of
from compress.passes.training import predict


def smaller_scales_if_as_faithful(quantize: Callable[[bool], nn.Module], module: nn.Module, calib_data: Dataset,
                                  example: tuple) -> tuple[nn.Module, bool, str]:
    """``(quantized module, per_channel, note)``: ``quantize(per_channel)`` returns a PT2E-converted module (int8
    quantize/dequantize around float ops, as the program will compute); per-tensor wins when it is as faithful to
    ``module`` on the first calibration samples. Compared in PyTorch, so only the kept one is lowered (lowering is the
    slow step); the written file is verified in ExecuTorch like any other."""
    batch = batch_of(example, calib_data)
    samples = min(FIDELITY_SAMPLES, calib_data.size) // batch * batch
    per_channel = quantize(True)
    if samples == 0:
        return per_channel, True, "weight scales per channel (too few calibration samples to compare per-tensor scales)"
    per_tensor = quantize(False)
    compared_on = calib_data.subset(np.arange(samples), calib_data.split_name)
    reference, channel, tensor = (predict(m, compared_on, batch) for m in (module, per_channel, per_tensor))
    channel_fidelity, tensor_fidelity = output_fidelity(reference, channel), output_fidelity(reference, tensor)
    compared = (f"SQNR {tensor_fidelity['sqnr_db']:.1f} vs {channel_fidelity['sqnr_db']:.1f} dB"
                + (f", top-1 agreement {tensor_fidelity['top1_agreement']:.3f} vs {channel_fidelity['top1_agreement']:.3f}"
                   if channel_fidelity["top1_agreement"] is not None else "")
                + f" on {samples} calibration samples")
    if as_faithful(tensor_fidelity, channel_fidelity):
        return per_tensor, False, (f"weight scales per tensor: as faithful to fp32 as per channel ({compared}) and smaller "
                                   "(a per-channel program keeps scales per output channel)")
    return per_channel, True, f"weight scales per channel: per tensor is less faithful to fp32 ({compared})"

