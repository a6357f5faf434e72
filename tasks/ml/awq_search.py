"""AutoAWQ 0.2.9's searches with every tensor kept on the quantizing device: `ResidentQuantizer`, the
quantizer class the quantize stage hands to AutoAWQ (`quantizer_cls`, its documented hook).

The algorithm is AutoAWQ's; what changes is where the data lives and how the clip error is summed.
Profiled on an H200 (Phi-3.5-mini shape, BENCHMARKS.md), AutoAWQ spent most of its 221 s moving data:
- each decoder layer went to the host and back four times (apply_scale, the clip search, apply_clip
  and packing each end with `layer.cpu()`), ~58 GB of copies;
- every linear's input activations were cached on the host, and their per-channel mean summed there;
- the scale search saved the weights to the host and copied them back after each of its 20 steps;
- the clip search multiplied inputs by weights element-wise, a [256 x 512 x groups x 128] tensor per
  step, where a batched matrix product gives the same sums.
Keeping the saved weights as copies also fixes the CPU path: there `.cpu()` returned the same tensors,
so the first step's in-place scaling was what got "restored" (tests/unit/test_awq_cpu.py).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from awq.quantize.quantizer import AwqQuantizer

CLIP_ROWS = 4096  # output channels per clip-search batch (they are independent): bounds its memory
MOE_TYPES = ("mixtral", "deepseek_v2", "deepseek_v3", "qwen3_moe")  # AutoAWQ caches their inputs its own way


class ResidentQuantizer(AwqQuantizer):
    def quantize(self):
        """AutoAWQ's loop, with each decoder layer's modules staying where the loop put them: their
        `.cpu()` does nothing until it ends (the loop leaves every layer on the device anyway)."""
        modules = [m for layer in self.modules for m in layer.modules()]
        for module in modules:
            module.cpu = lambda *args, _module=module, **kwargs: _module
        try:
            super().quantize()
        finally:
            for module in modules:
                del module.cpu

    def _get_input_feat(self, layer, named_linears):
        """Each linear's inputs over the calibration batch, kept on the layer's device."""
        if self.awq_model.model_type in MOE_TYPES:
            return super()._get_input_feat(layer, named_linears)
        inputs = defaultdict(list)
        hooks = [
            linear.register_forward_hook(lambda _m, args, _out, name=name: inputs[name].append(args[0].detach()))
            for name, linear in named_linears.items()
        ]
        self.inps = self.inps.to(next(layer.parameters()).device)
        try:
            self.inps = self._module_forward(self.inps, layer, self._sanitize_kwargs(self.module_kwargs, layer))
        finally:
            for hook in hooks:
                hook.remove()
        # cat copies: linears that share an input (q, k, v) get their own, which apply_scale divides in place
        return {name: torch.cat(chunks, dim=0) for name, chunks in inputs.items()}

    @torch.no_grad()
    def _search_best_scale(self, module, prev_op, layers, inp, module2inspect=None, kwargs={}):  # noqa: B006
        """AutoAWQ's scale search; the inputs' per-channel mean is taken on their device, in fp32."""
        from awq.utils.module import get_op_name

        if module2inspect is None:
            module2inspect = layers[0]
        kwargs.pop("use_cache", None)
        inp = inp.to(next(module2inspect.parameters()).device)
        # Each weight's magnitude relative to its group's largest, averaged per input channel.
        weight = torch.cat([layer.weight for layer in layers], dim=0)
        grouped = weight.view(-1, self.group_size).abs()
        w_mean = (grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)).view(weight.shape).mean(0)
        flat = inp.view(-1, inp.shape[-1])
        rows = max(1, self.max_chunk_memory // (flat.element_size() * 2 * flat.shape[1]))
        x_sum = sum(chunk.abs().float().sum(dim=0) for chunk in flat.split(rows))
        x_mean = (x_sum / flat.shape[0]).to(inp.dtype)
        module_kwargs = self._sanitize_kwargs(kwargs, module2inspect)
        fp16_output = self._module_forward(inp, module2inspect, module_kwargs)
        fp16_output = fp16_output.clip(torch.finfo(fp16_output.dtype).min, torch.finfo(fp16_output.dtype).max)
        best_scales = self._compute_best_scale(inp, w_mean, x_mean, module2inspect, layers, fp16_output, module_kwargs)
        return get_op_name(module, prev_op), tuple(get_op_name(module, m) for m in layers), best_scales

    @torch.no_grad()
    def _compute_best_scale(self, x, w_mean, x_mean, module2inspect, linears2scale, fp16_output, kwargs={}):  # noqa: B006
        """AutoAWQ's grid over s = x_mean^r / w_mean^(1-r), r in [0, 1): for each, the output error of
        Q(W s) s^-1 x; the weights are restored from copies on their own device after each step."""
        n_grid = 20
        saved = {name: t.detach().clone() for name, t in module2inspect.state_dict().items()}
        x_mean, w_mean = x_mean.view(-1).to(x.device), w_mean.view(-1).to(x.device)
        best_error, best_scales = float("inf"), None
        for step in range(n_grid):
            ratio = step / n_grid
            if self.duo_scaling:
                scales = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
            else:
                scales = x_mean.pow(ratio).clamp(min=1e-4).view(-1)
            scales = scales / (scales.max() * scales.min()).sqrt()
            scales[torch.isinf(scales) | torch.isnan(scales)] = 1  # values that overflow stay unscaled
            for fc in linears2scale:
                fc.weight.mul_(scales.view(1, -1))
                fc.weight.data = self.pseudo_quantize_tensor(fc.weight.data)[0] / scales.view(1, -1)
            out = self._module_forward(x, module2inspect, kwargs)
            out = out.clip(torch.finfo(out.dtype).min, torch.finfo(out.dtype).max)
            loss = self._compute_loss(fp16_output, out, x.device)
            if loss < best_error:
                best_error, best_scales = loss, scales.clone()
            module2inspect.load_state_dict(saved)
        if best_scales is None or torch.isnan(best_scales).any():
            raise RuntimeError(f"AWQ scale search: no finite error for {type(module2inspect).__name__}")
        return best_scales.detach().cpu()

    @torch.no_grad()
    def _compute_best_clip(self, w, input_feat, n_grid=20, max_shrink=0.5, n_sample_token=512):
        """AutoAWQ's clip search: per output channel and group, the largest |w| (shrunk in n_grid
        steps down to max_shrink) whose rounded weights give the least output error on sampled
        tokens. The per-group sums are one batched matrix product: [groups, tokens, channels]."""
        group = self.group_size if self.group_size > 0 else w.shape[1]
        x = input_feat.view(-1, input_feat.shape[-1])
        x = x[:: max(1, x.shape[0] // n_sample_token)].to(w.device)
        x = x.view(x.shape[0], -1, group).transpose(0, 1)  # [groups, tokens, group]
        best = []
        for rows in w.split(CLIP_ROWS):
            wg = rows.view(rows.shape[0], -1, group)  # [channels, groups, group]
            org_max = wg.abs().amax(dim=-1, keepdim=True)
            org_out = torch.bmm(x, wg.permute(1, 2, 0))
            best_max = org_max.clone()
            least = torch.full(org_max.shape, float("inf"), device=w.device)
            for shrink in range(int(max_shrink * n_grid)):
                max_val = org_max * (1 - shrink / n_grid)
                q = self.pseudo_quantize_tensor(torch.clamp(wg, -max_val, max_val))[0]
                err = (torch.bmm(x, q.permute(1, 2, 0)) - org_out).float().pow(2).mean(dim=1)  # [groups, channels]
                err = err.t().unsqueeze(-1)
                better = err < least
                least = torch.where(better, err, least)
                best_max = torch.where(better, max_val, best_max)
            best.append(best_max)
        return torch.cat(best)  # [channels, groups, 1], as AutoAWQ's apply_clip reads it
