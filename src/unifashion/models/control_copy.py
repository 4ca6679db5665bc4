"""Trainable copy of the UNet encoder joined to the UNet decoder by zero cross-attention (Figure 3).

The try-on / design model of UniFashion (paper Figure 3, after StableVITON) adds to the Stable Diffusion
UNet a trainable copy of its encoder (conv_in, down blocks, mid block) that reads the garment latent
(try-on) or the sketch latent (design), under the same timestep embedding and the same cross-attention
condition (the image-adapter output of the Q-Former queries) as the UNet. The input ``h`` of every UNet
up block that has cross-attention then attends to the copy's feature map of the same resolution ``c``
through a zero cross-attention block::

    h <- h + W_out · Attention(q = W_q · GN(h) + PE, k = W_k · LN(c) + PE, v = W_v · LN(c))

with ``W_out`` (weight and bias) initialised to zero, so that at initialisation the controlled UNet
returns exactly the plain UNet's output (``h + 0 == h`` bitwise; test), and the first optimiser step
moves ``W_out`` only (the gradients of ``W_q, W_k, W_v`` are zero while ``W_out`` is zero).
PE is a fixed 2-D sinusoidal position code (so that a decoder pixel can prefer the garment region at
the same place); it adds no parameter and does not change the output at initialisation.

Which copy feature a decoder block attends to: resolution level j (j downsamplings) holds, for
j < n - 1, the output of copy down block j before its downsampler (channels ``block_out_channels[j]``),
and for j = n - 1 the copy's mid-block output. Up block i runs (and receives its input) at level
``n - 1 - i``. Only up blocks with cross-attention get a zero cross-attention, so the copy attends where
the UNet itself attends: SD-1.4 (n = 4, up block 0 has none) at levels 2, 1, 0 (16 x 12 ... 64 x 48
latents at 512 x 384), the tiny CPU UNets (`attention_from_block: 1`) only below full resolution.

`ControlCopy.forward` re-runs the UNet's own modules in the order of diffusers'
``UNet2DConditionModel.forward`` (time embedding, conv_in, down blocks, mid block, up blocks, output
convolution); UNets with class / addition embeddings are refused. The copy keeps no reference to the
UNet (the UNet is passed to `forward`), so its parameters are registered once, under ``generator.control``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor, nn


def sinusoidal_position_2d(height: int, width: int, channels: int, device=None, dtype=None) -> Tensor:
    """Fixed 2-D sine-cosine position code (h*w, channels): half of the channels encode y, half x.

    Channels not divisible by 4 are zero-padded at the end.
    """
    quarter = channels // 4
    out = torch.zeros(height * width, channels, device=device, dtype=torch.float32)
    if quarter == 0:
        return out.to(dtype or torch.float32)
    freq = torch.exp(-math.log(10_000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    y = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)  # (h*w,)
    x = torch.arange(width, device=device, dtype=torch.float32).repeat(height)  # (h*w,)
    ay, ax = y[:, None] * freq[None], x[:, None] * freq[None]  # (h*w, quarter)
    out[:, : 4 * quarter] = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return out.to(dtype or torch.float32)


class ZeroCrossAttention(nn.Module):
    """Decoder features (B, C, h, w) attend to copy features (B, C_c, h', w'); zero-initialised output.

    Args:
        query_channels: C, channels of the UNet up-block output.
        context_channels: C_c, channels of the copy feature map.
        heads: attention heads (C must be divisible by it).
        norm_groups: group-norm groups of the query normalisation.
    """

    def __init__(self, query_channels: int, context_channels: int, heads: int, norm_groups: int) -> None:
        super().__init__()
        if query_channels % heads:
            raise ValueError(f"query channels {query_channels} not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(math.gcd(norm_groups, query_channels), query_channels, eps=1e-6)
        self.context_norm = nn.LayerNorm(context_channels)
        self.to_q = nn.Linear(query_channels, query_channels, bias=False)
        self.to_k = nn.Linear(context_channels, query_channels, bias=False)
        self.to_v = nn.Linear(context_channels, query_channels, bias=False)
        self.to_out = nn.Linear(query_channels, query_channels)
        nn.init.zeros_(self.to_out.weight)  # the "zero" of zero cross-attention
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = hidden.shape
        hc, wc = context.shape[-2:]
        pe_q = sinusoidal_position_2d(h, w, c, hidden.device, hidden.dtype)  # (h*w, C)
        pe_k = sinusoidal_position_2d(hc, wc, c, hidden.device, hidden.dtype)  # (h'*w', C)
        q = self.to_q(self.norm(hidden).flatten(2).transpose(1, 2)) + pe_q  # (B, h*w, C)
        ctx = self.context_norm(context.flatten(2).transpose(1, 2))  # (B, h'*w', C_c)
        k = self.to_k(ctx) + pe_k  # (B, h'*w', C)
        v = self.to_v(ctx)  # (B, h'*w', C)
        d = c // self.heads
        q, k, v = (t.view(b, -1, self.heads, d).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, h*w, d)
        out = self.to_out(out.transpose(1, 2).reshape(b, h * w, c))  # (B, h*w, C)
        return hidden + out.transpose(1, 2).reshape(b, c, h, w)  # residual: exactly `hidden` at init


class ControlCopy(nn.Module):
    """Trainable copy of a UNet's encoder + one zero cross-attention per up block (module docstring).

    Args:
        unet: the UNet whose encoder is copied (its weights are the copy's initial weights).
        control_channels: channels of the control input (the garment / sketch latent; SD: 4).
        heads: heads of the zero cross-attention blocks (default: the UNet's `attention_head_dim`, which
            diffusers' SD-1.x configs use as the number of heads).

    Raises:
        ValueError: for UNets with addition embeddings, class embeddings other than an added projection,
            or without a mid block.
    """

    def __init__(self, unet: UNet2DConditionModel, control_channels: int, heads: int | None = None) -> None:
        super().__init__()
        cfg = unet.config
        if cfg.class_embed_type not in (None, "projection") or cfg.class_embeddings_concat:
            raise ValueError(f"ControlCopy supports UNets without class_embed_type or with an added 'projection' "
                             f"(the pooled condition); this UNet has class_embed_type={cfg.class_embed_type!r}, "
                             f"class_embeddings_concat={cfg.class_embeddings_concat!r}")
        for key in ("addition_embed_type", "encoder_hid_dim_type"):
            if getattr(cfg, key, None) is not None:
                raise ValueError(f"ControlCopy supports UNets without {key}; this UNet has {key}="
                                 f"{getattr(cfg, key)!r}")
        if unet.mid_block is None:
            raise ValueError("ControlCopy needs a UNet with a mid block")
        if heads is None:
            heads = cfg.attention_head_dim if isinstance(cfg.attention_head_dim, int) else cfg.attention_head_dim[0]
        old = unet.conv_in
        self.conv_in = nn.Conv2d(control_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                 dtype=old.weight.dtype, device=old.weight.device)
        with torch.no_grad():  # the pretrained weights of the latent channels, zeros for any further one
            self.conv_in.weight.zero_()
            k = min(control_channels, cfg.out_channels, old.in_channels)
            self.conv_in.weight[:, :k] = old.weight[:, :k]
            self.conv_in.bias.copy_(old.bias)
        self.down_blocks = copy.deepcopy(unet.down_blocks)
        self.mid_block = copy.deepcopy(unet.mid_block)
        self.down_blocks.requires_grad_(True)
        self.mid_block.requires_grad_(True)
        widths = list(cfg.block_out_channels)
        n = len(widths)
        groups = cfg.norm_num_groups or 32
        # up block i: input level n-1-i, input channels = the mid block's (i = 0) or up block i-1's output
        self.zero_attention = nn.ModuleDict({
            str(i): ZeroCrossAttention(widths[n - i] if i else widths[-1], widths[n - 1 - i], heads, groups)
            for i, block in enumerate(unet.up_blocks) if getattr(block, "has_cross_attention", False)
        })
        if not self.zero_attention:
            raise ValueError("ControlCopy: the UNet has no up block with cross-attention to join the copy to")

    def zero_parameters(self) -> list[nn.Parameter]:
        """The zero-initialised output projections (weights and biases) of the cross-attention blocks."""
        return [p for a in self.zero_attention.values() for p in a.to_out.parameters()]

    def encode(self, control: Tensor, emb: Tensor, encoder_hidden_states: Tensor) -> list[Tensor]:
        """The copy's feature map per resolution level: [(B, C_j, h/2^j, w/2^j) for j in 0..n-1]."""
        x = self.conv_in(control)  # (B, C_0, h, w)
        levels = []
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                x, res = block(hidden_states=x, temb=emb)
            # the block's last feature before its downsampler (the downsampler's output is res[-1])
            levels.append(res[-2] if block.downsamplers is not None else res[-1])
        mid = self.mid_block(x, emb, encoder_hidden_states=encoder_hidden_states) \
            if getattr(self.mid_block, "has_cross_attention", False) else self.mid_block(x, emb)
        levels[-1] = mid  # level n-1: the mid-block output (same resolution as the last down block)
        return levels

    def forward(self, unet: UNet2DConditionModel, sample: Tensor, timestep: Tensor | int,
                encoder_hidden_states: Tensor, control: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The controlled UNet's prediction (B, C_out, h, w).

        Args:
            unet: the UNet this copy was made from (or one with the same architecture).
            sample: the UNet input (B, C_in, h, w) (noisy latent + spatial conditions).
            timestep: the diffusion timestep(s).
            encoder_hidden_states: the cross-attention condition (B, Q, D), shared by UNet and copy.
            control: the control input (B, control_channels, h, w) (garment / sketch latent).
            class_labels: the pooled condition (B, D) of a UNet with a class embedding (`GeneratorConfig.
                pooled_condition`), added to the timestep embedding of UNet and copy as diffusers does.
        """
        if control.shape[-2:] != sample.shape[-2:]:
            raise ValueError(f"control input {tuple(control.shape)} must have the sample's spatial size "
                             f"{tuple(sample.shape[-2:])}")
        up_factor = 2 ** unet.num_upsamplers
        forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])
        t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
        emb = unet.time_embedding(t_emb, None)  # (B, T)
        class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)  # (B, T) or None
        if class_emb is not None:  # added, as diffusers does without class_embeddings_concat (checked above)
            emb = emb + class_emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=None)

        features = self.encode(control.to(sample.dtype), emb, ehs)  # per level, (B, C_j, h_j, w_j)

        x = unet.conv_in(sample)
        res_samples: tuple[Tensor, ...] = (x,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=ehs)
            else:
                x, res = block(hidden_states=x, temb=emb)
            res_samples += res
        if getattr(unet.mid_block, "has_cross_attention", False):
            x = unet.mid_block(x, emb, encoder_hidden_states=ehs)
        else:
            x = unet.mid_block(x, emb)
        n = len(unet.up_blocks)
        for i, block in enumerate(unet.up_blocks):
            last = i == n - 1
            if str(i) in self.zero_attention:
                x = self.zero_attention[str(i)](x, features[n - 1 - i])  # (B, C, h_i, w_i)
            res = res_samples[-len(block.resnets):]
            res_samples = res_samples[: -len(block.resnets)]
            upsample_size = res_samples[-1].shape[2:] if (not last and forward_upsample_size) else None
            if getattr(block, "has_cross_attention", False):
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ehs,
                          upsample_size=upsample_size)
            else:
                x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size)
        if unet.conv_norm_out is not None:
            x = unet.conv_act(unet.conv_norm_out(x))
        return unet.conv_out(x)
