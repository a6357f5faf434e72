"""Round-to-nearest on AWQ's grid: the baseline an activation-aware quantizer has to beat.

The same grid as the AWQ checkpoint (zero point, `bits`, groups of `group_size` input channels,
fp16 scales), without AWQ's scale and clip search: what plain rounding costs on this model.
"""

from __future__ import annotations


def fake_quantize(weight, bits: int, group_size: int):
    """W [out, in] -> the dequantized round-to-nearest W, as AutoAWQ's pseudo_quantize_tensor."""
    import torch

    rows = weight.float().reshape(-1, group_size)
    top, low = rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True)
    max_int = 2**bits - 1
    scales = ((top - low).clamp(min=1e-5) / max_int).half().float()  # stored in fp16, as AWQ's
    zeros = (-torch.round(low / scales)).clamp(0, max_int)
    q = torch.clamp(torch.round(rows / scales) + zeros, 0, max_int)
    return ((q - zeros) * scales).reshape(weight.shape).to(weight.dtype)


def quantize_decoder_linears(model, bits: int, group_size: int) -> int:
    """Round every linear layer inside the decoder blocks in place (what AWQ quantizes; the
    embeddings and lm_head stay as they are). Returns how many layers were rounded."""
    import torch

    count = 0
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(fake_quantize(module.weight, bits, group_size))
                count += 1
    return count
