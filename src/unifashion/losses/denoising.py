"""Latent-diffusion denoising loss (UniFashion eqs. 7 and 12).

L_q2I = E_{z, eps, t} || target - eps_theta(z_t, t, c) ||^2, where the target is the noise eps for an
epsilon-predicting scheduler or the velocity v = sqrt(a_t) eps - sqrt(1 - a_t) z_0 for a v-predicting one
(diffusers `train_text_to_image.py` branches the same way). Any other prediction type is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")


def denoising_target(scheduler, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """Return the regression target of the UNet for the scheduler's `prediction_type`.

    Args:
        scheduler: a diffusers training scheduler (e.g. `DDPMScheduler`) whose `config.prediction_type`
            is "epsilon" or "v_prediction" and which implements `get_velocity`.
        latents: clean latents z_0, float (B, C, h, w).
        noise: the Gaussian noise eps added to z_0, float (B, C, h, w).
        timesteps: long (B,), the diffusion step of each item.

    Returns:
        float (B, C, h, w), the target.

    Raises:
        ValueError: if the prediction type is neither "epsilon" nor "v_prediction".
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)  # (B, C, h, w)
    raise ValueError(
        f"Unknown scheduler prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}."
    )


def snr(scheduler, timesteps: Tensor) -> Tensor:
    """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of each timestep, float32 (B,)."""
    alpha_bar = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps]  # (B,)
    return (alpha_bar / (1.0 - alpha_bar)).float()


def min_snr_weights(scheduler, timesteps: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    Strategy", eq. 11), float32 (B,).

    The paper weights the x_0-space error by min(SNR_t, gamma). The epsilon error is SNR_t times the x_0
    error and the velocity error (SNR_t + 1) times, so the weights of those targets are min(SNR_t, gamma) /
    SNR_t and min(SNR_t, gamma) / (SNR_t + 1) (diffusers' `train_text_to_image.py --snr_gamma`). This caps
    the nearly clean, low-noise steps; under v-prediction it also lowers the high-noise steps (weight ~SNR_t
    there), where the demo's colour is decided, and it did not help the tiny generator (bench/RESULTS.md).
    """
    s = snr(scheduler, timesteps)  # (B,)
    capped = torch.clamp(s, max=gamma)  # (B,)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return capped / s.clamp_min(1e-8)  # an SNR of 0 (zero-terminal-SNR step) would divide by 0
    if prediction_type == "v_prediction":
        return capped / (s + 1.0)
    raise ValueError(f"Unknown scheduler prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}.")


def denoising_loss(
    model_pred: Tensor, latents: Tensor, noise: Tensor, timesteps: Tensor, scheduler,
    snr_gamma: float | None = None,
) -> dict[str, Tensor]:
    """Mean squared error between the UNet output and the denoising target (eq. 7 / eq. 12).

    Args:
        model_pred: the UNet output, float (B, C, h, w).
        latents: clean latents z_0, float (B, C, h, w).
        noise: the noise eps, float (B, C, h, w).
        timesteps: long (B,).
        scheduler: the training scheduler (see `denoising_target`).
        snr_gamma: None for the plain mean (SD-1.4's training); a value (5 in Hang et al.) weights each
            item's MSE by `min_snr_weights` before the batch mean.

    Returns:
        {"denoise": scalar loss}, computed in float32.
    """
    target = denoising_target(scheduler, latents, noise, timesteps)
    if model_pred.shape != target.shape:
        raise ValueError(f"UNet output shape {tuple(model_pred.shape)} != target shape {tuple(target.shape)}")
    if snr_gamma is None:
        return {"denoise": F.mse_loss(model_pred.float(), target.float(), reduction="mean")}
    per_item = F.mse_loss(model_pred.float(), target.float(), reduction="none").flatten(1).mean(1)  # (B,)
    return {"denoise": (min_snr_weights(scheduler, timesteps, snr_gamma) * per_item).mean()}


__all__ = ["PREDICTION_TYPES", "denoising_loss", "denoising_target", "min_snr_weights", "snr"]

