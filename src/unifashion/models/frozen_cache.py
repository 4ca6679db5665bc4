"""Cache of a frozen network's per-image outputs, keyed by the content of each input image.

In the generative phases the Q-Former and the VAE are frozen and kept in eval mode, so an image's
query outputs Z (Q, H) and its VAE posterior (2C, h, w) never change during a run; over several epochs
their forward passes would be recomputed for the same images again and again. `FrozenOutputCache`
computes an output once per distinct image and reads it back afterwards (`UniFashionModule.query_cache`,
`Generator.posterior_cache`).

The key is a 128-bit BLAKE2 digest of the image tensor's bytes (plus its shape and dtype), so the
cache needs nothing from the dataset and is exact by construction: an augmented view is another
key (a miss, computed as usual). It must be cleared whenever the network's weights change
(`UniFashionModule` clears both at the start of every fit).

Memory: ``max_items * Q * H * 4`` bytes on the host (tiny demo: 10,000 x 8 x 128 x 4 B = 41 MB;
BLIP-2 size: 32 x 768 x 4 B = 98 KB per image, so 100k images need ~9.8 GB). When full, new
images are computed but not stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


def image_key(image: torch.Tensor) -> bytes:
    """128-bit digest of one image tensor (C, H, W): its bytes, shape and dtype."""
    data = image.detach().to("cpu").contiguous()  # a no-op for a row of a batch already on the host
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((tuple(data.shape), data.dtype)).encode())
    digest.update(data.numpy().tobytes())
    return digest.digest()


class FrozenOutputCache:
    """Outputs of a frozen network by image content (see the module docstring).

    Args:
        max_items: most images stored; 0 disables the cache (every call computes).
    """

    def __init__(self, max_items: int) -> None:
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        self.max_items = max_items
        self._store: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forgets every stored output and resets the hit/miss counts."""
        self._store.clear()
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Outputs for a batch, computing only the images not seen before.

        Args:
            encode: images (N, C, H, W) -> outputs (N, ...) of the frozen network (query outputs (N, Q, H_q),
                VAE moments (N, 2C, h, w)).
            images: (B, C, H, W).

        Returns:
            (B, ...) on ``images``' device, equal to ``encode(images)``.
        """
        if self.max_items == 0:
            return encode(images)
        keys = [image_key(img) for img in images.detach().to("cpu")]  # one device->host copy per batch
        todo = sorted({i for i, k in enumerate(keys) if k not in self._store})
        fresh: dict[bytes, torch.Tensor] = {}
        if todo:
            computed = encode(images[todo])  # (N, Q, H_q)
            for i, out in zip(todo, computed):
                fresh[keys[i]] = out
                if len(self._store) < self.max_items:
                    self._store[keys[i]] = out.detach().to("cpu")
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        rows = [fresh[k] if k in fresh else self._store[k].to(images.device) for k in keys]
        return torch.stack(rows)  # (B, Q, H_q)
