"""Latent-diffusion denoising loss (UniFashion eqs. 7 and 12).

L_q2I = E_{z, eps, t} || target - eps_theta(z_t, t, c) ||^2, where the target is the noise eps for an
epsilon-predicting scheduler or the velocity v = sqrt(a_t) eps - sqrt(1 - a_t) z_0 for a v-predicting one
(diffusers `train_text_to_image.py` branches the same way). Any other prediction type is an error.
"""

from __future__ import annotations

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


def denoising_loss(
    model_pred: Tensor, latents: Tensor, noise: Tensor, timesteps: Tensor, scheduler
) -> dict[str, Tensor]:
    """Mean squared error between the UNet output and the denoising target (eq. 7 / eq. 12).

    Args:
        model_pred: the UNet output, float (B, C, h, w).
        latents: clean latents z_0, float (B, C, h, w).
        noise: the noise eps, float (B, C, h, w).
        timesteps: long (B,).
        scheduler: the training scheduler (see `denoising_target`).

    Returns:
        {"denoise": scalar loss}, computed in float32.
    """
    target = denoising_target(scheduler, latents, noise, timesteps)
    if model_pred.shape != target.shape:
        raise ValueError(f"UNet output shape {tuple(model_pred.shape)} != target shape {tuple(target.shape)}")
    return {"denoise": F.mse_loss(model_pred.float(), target.float(), reduction="mean")}


__all__ = ["PREDICTION_TYPES", "denoising_loss", "denoising_target"]

