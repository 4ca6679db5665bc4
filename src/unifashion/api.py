"""`UniFashion`: the front door to a trained model, and the gallery index built on it.

    from unifashion import UniFashion

    model = UniFashion.from_checkpoint("runs/demo/retrieval.ckpt")
    gallery = model.index(["a.jpg", "b.jpg", ...], ids=["a", "b", ...])
    gallery.search(text="long sleeve shirt in navy", k=5)            # [(id, score), ...]
    gallery.search(image="query.jpg", k=5)                           # image -> image
    gallery.search(image="ref.jpg", modifier="is red with long sleeves", k=5)   # composed (phase 2)
    model.caption(["a.jpg"], style="fashiongen")                     # ["Long sleeve shirt in navy. ..."]
    model.generate(images=["a.jpg"], sampler="dpmsolver++", steps=20)   # [PIL.Image]

Inputs are PIL images, paths or tensors (a CLIP-normalised (3, S, S) image or a (B, 3, S, S) batch,
as the data modules yield them); outputs are plain tensors on the CPU, strings or PIL images. Every
call is batched, runs without autograd in eval mode on the model's device, and restores the module's
mode afterwards. The CLI verbs, the demo, the evaluations (`unifashion.tasks`) and the notebooks all go
through this class; nothing else reaches into the encoder.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from unifashion.data.transforms import ImageTransform
from unifashion.index import GalleryIndex as FeatureIndex
from unifashion.index import IndexSettings
from unifashion.module import UniFashionModule
from unifashion.scoring import score_matrix

log = logging.getLogger(__name__)

ImageLike = Image.Image | str | os.PathLike | Tensor
"""One image: a PIL image, a path, or a CLIP-normalised (3, S, S) tensor."""

Sampler = Literal["pndm", "dpmsolver++", "ddim"]


def _inference(fn):
    """Runs an API method without autograd, in eval mode, restoring the module's mode after (a module
    that is being trained between evaluations, as in the demo, keeps training with dropout on)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                return fn(self, *args, **kwargs)
        finally:
            self.module.train(was_training)

    return wrapper


def _progress(iterable: Iterable, total: int | None, desc: str, show: bool) -> Iterable:
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not show or (total or 0) < 2)


@dataclass(frozen=True)
class Capabilities:
    """What a checkpoint can do."""

    phase: str
    """The phase the checkpoint was trained in."""
    retrieval: bool
    """Embeddings and text/image search (every checkpoint has the encoder)."""
    compose: bool
    """Composed queries (reference image + modifying text) trained by phase 2."""
    caption: bool
    """A caption generator (phase1_captioning / phase1_generative / phase 2)."""
    generate: bool
    """An image generator (phase1_image_generation / phase1_generative / phase 2 / try-on)."""
    tryon: bool
    """A try-on / design generator (VITON-HD conditions)."""

    def __str__(self) -> str:
        can = [name for name in ("retrieval", "compose", "caption", "generate", "tryon") if getattr(self, name)]
        return f"phase {self.phase}: " + ", ".join(can)


class UniFashion:
    """A trained UniFashion model for inference.

    Args:
        module: a `UniFashionModule` (use `from_checkpoint` to load one from disk).
        show_progress: show progress bars on long loops (captioning, generation, indexing).
    """

    def __init__(self, module: UniFashionModule, show_progress: bool = True) -> None:
        self.module = module
        self.show_progress = show_progress
        self._transform = ImageTransform(size=self.encoder.config.image_size)
        self._warned_compose = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        show_progress: bool = True) -> UniFashion:
        """Loads any checkpoint the phases write; frozen pretrained parts reload from their paths.

        Args:
            path: a Lightning checkpoint (`.ckpt`) of any phase.
            device: where to run ("cuda", "cpu", ...); None: CUDA when available.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        module = UniFashionModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
        model = cls(module.to(device).eval(), show_progress=show_progress)
        log.info("loaded %s (%s)", path, model.capabilities)
        return model

    # ------------------------------------------------------------------ parts
    @property
    def device(self) -> torch.device:
        return self.module.encoder.temp.device

    @property
    def encoder(self):
        return self.module.encoder

    @property
    def captioner(self):
        return self.module.captioner

    @property
    def generator(self):
        return self.module.generator

    @property
    def temperature(self) -> float:
        """The learned ITC temperature tau (eq. 3): similarities / tau are the ITC logits."""
        return float(self.encoder.temp)

    @property
    def capabilities(self) -> Capabilities:
        gen = self.generator
        return Capabilities(
            phase=self.module.phase.name,
            retrieval=True,
            compose=self.module.phase.name == "phase2_composed",
            caption=self.captioner is not None,
            generate=gen is not None,
            tryon=gen is not None and getattr(gen.config, "variant", "plain") != "plain",
        )

    def _require(self, what: str) -> None:
        if not getattr(self.capabilities, what):
            hints = {"caption": "train phase1_captioning, phase1_generative or phase2_composed",
                     "generate": "train phase1_image_generation, phase1_generative or phase2_composed",
                     "tryon": "train finetune_tryon or finetune_design",
                     "compose": "train phase2_composed"}
            raise ValueError(f"this checkpoint ({self.capabilities}) cannot {what}: {hints.get(what, '')}")

    # ------------------------------------------------------------------ inputs
    def pixels(self, images: ImageLike | Sequence[ImageLike]) -> Tensor:
        """Images -> CLIP-normalised float (B, 3, S, S) on the model's device."""
        if isinstance(images, Tensor):
            batch = images.unsqueeze(0) if images.dim() == 3 else images
        else:
            if isinstance(images, (Image.Image, str, os.PathLike)):
                images = [images]
            batch = torch.stack([self._one_image(im) for im in images])
        size = self.encoder.config.image_size
        if batch.dim() != 4 or batch.shape[1] != 3 or tuple(batch.shape[-2:]) != (size, size):
            raise ValueError(f"image tensors must be (B, 3, {size}, {size}) CLIP-normalised, got {tuple(batch.shape)}")
        return batch.to(self.device)

    def _one_image(self, image: ImageLike) -> Tensor:
        if isinstance(image, Tensor):
            return image
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image not found: {path}")
            try:
                with Image.open(path) as im:
                    image = im.convert("RGB")
            except OSError as e:
                raise ValueError(f"cannot read image {path}: {e}") from e
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, a path or a tensor, got {type(image).__name__}")
        return self._transform(image.convert("RGB"))

    def _batches(self, images: Any, batch_size: int, desc: str = "") -> Iterator[Tensor]:
        """(b, 3, S, S) pixel batches of any image collection (a tensor batch, a list, any iterable)."""
        if isinstance(images, Tensor) and images.dim() == 4:
            for start in range(0, images.shape[0], batch_size):
                yield self.pixels(images[start : start + batch_size])
            return
        if isinstance(images, (Image.Image, str, os.PathLike)) or (isinstance(images, Tensor) and images.dim() == 3):
            images = [images]
        total = len(images) if hasattr(images, "__len__") else None
        chunk: list[ImageLike] = []
        steps = None if total is None else -(-total // batch_size)
        bar = _progress(range(steps or 0), steps, desc, self.show_progress and bool(desc))
        it = iter(bar)
        for image in images:
            chunk.append(image)
            if len(chunk) == batch_size:
                next(it, None)
                yield self.pixels(chunk)
                chunk = []
        if chunk:
            next(it, None)
            yield self.pixels(chunk)

    def _texts(self, texts: str | Sequence[str]) -> list[str]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        return texts

    # ------------------------------------------------------------------ embeddings
    @_inference
    def embed_images(self, images: Any, batch_size: int = 64) -> Tensor:
        """ITC features of images: float (N, Q, E), L2-normalised (eq. 3 takes the max over Q)."""
        return torch.cat([self.encoder.encode_image(px).image_feats.float().cpu()
                          for px in self._batches(images, batch_size, "embed images")])

    @_inference
    def image_queries(self, images: Any, batch_size: int = 64) -> Tensor:
        """Q-Former query outputs Z of images (unimodal mode): float (N, Q, H), the captioner's and
        generator's condition."""
        return torch.cat([self.encoder.encode_image(px).query_output.float().cpu()
                          for px in self._batches(images, batch_size)])

    @_inference
    def embed_texts(self, texts: str | Sequence[str], batch_size: int = 256) -> Tensor:
        """ITC features of texts: float (M, E), L2-normalised ([CLS] through the Q-Former, text only)."""
        texts = self._texts(texts)
        feats = []
        for start in range(0, len(texts), batch_size):
            tok = self.encoder.tokenize(texts[start : start + batch_size])
            feats.append(self.encoder.encode_text(tok["input_ids"], tok["attention_mask"]).text_feat.float().cpu())
        return torch.cat(feats) if feats else torch.empty(0, self.encoder.model.config.image_text_hidden_size)

    @_inference
    def _fuse(self, images: Any, texts: str | Sequence[str], batch_size: int) -> tuple[Tensor, Tensor]:
        texts = self._texts(texts)
        zs, feats, start = [], [], 0
        for px in self._batches(images, batch_size):
            chunk = texts[start : start + px.shape[0]]
            if len(chunk) != px.shape[0]:
                raise ValueError(f"compose needs one modifying text per image, got {len(texts)} texts")
            tok = self.encoder.tokenize(chunk)
            z, e_cls = self.encoder.fuse(self.encoder.encode_vision(px), tok["input_ids"], tok["attention_mask"])
            zs.append(z.float().cpu())
            feats.append(e_cls.float().cpu())
            start += px.shape[0]
        if start != len(texts):
            raise ValueError(f"compose needs one modifying text per image: {start} images, {len(texts)} texts")
        return torch.cat(zs), torch.cat(feats)

    def compose(self, images: Any, texts: str | Sequence[str], batch_size: int = 64) -> Tensor:
        """Composed queries (reference image + modifying text, bi-directional mask; eq. 9): the
        projected text [CLS] output e_cls, float (B, E), L2-normalised; score it against
        `embed_images` of the gallery with `scoring.score_matrix` (max over the gallery's queries)."""
        if not self.capabilities.compose and not self._warned_compose:
            log.warning("compose on a %s checkpoint: the fusion was not trained (phase2_composed trains it)",
                        self.module.phase.name)
            self._warned_compose = True
        return self._fuse(images, texts, batch_size)[1]

    def composed_queries(self, images: Any, texts: str | Sequence[str], batch_size: int = 64) -> Tensor:
        """Z_R of reference image + modifying text: float (B, Q, H), the condition of the composed
        caption (eq. 11) and the composed image (eq. 12)."""
        return self._fuse(images, texts, batch_size)[0]

    @_inference
    def vision_features(self, images: Any, batch_size: int = 64) -> Tensor:
        """Vision-encoder outputs of images, float (N, P, Hv): what ITM and the Q-Former cross-attend;
        pass them to `match(vision=...)` to score many texts against the same images."""
        return torch.cat([self.encoder.encode_vision(px) for px in self._batches(images, batch_size)])

    @_inference
    def match(self, images: Any, texts: str | Sequence[str], image_index: Tensor | None = None,
              output: Literal["probability", "logits"] = "probability", batch_size: int = 64,
              vision: Tensor | None = None) -> Tensor:
        """Image-text matching (eq. 4) of each text with its image: float (B,), the probability of
        "matches"; with ``output="logits"`` the ITM head's logits float (B, 2) [no match, match], as
        ITM re-ranking (`tasks.cmr.protocol.itm_rerank`) reads them.

        Args:
            images: one image per text; or, with `image_index`, distinct images (each through the
                vision model once) and
            image_index: long (B,), the image of each text.
            vision: instead of `images`, their `vision_features` (U, P, Hv) (`images` must be None).
        """
        if output not in ("probability", "logits"):
            raise ValueError(f"match: output must be 'probability' or 'logits', got {output!r}")
        texts = self._texts(texts)
        if (images is None) == (vision is None):
            raise ValueError("match needs exactly one of images or vision")
        if vision is None:
            vision = torch.cat([self.encoder.encode_vision(px) for px in self._batches(images, batch_size)])  # (U, P, Hv)
        vision = vision.to(self.device)
        index = torch.arange(len(texts)) if image_index is None else image_index.cpu()
        if index.numel() != len(texts) or (index.numel() and int(index.max()) >= vision.shape[0]):
            raise ValueError(f"match: {len(texts)} texts for {vision.shape[0]} images (image_index {tuple(index.shape)})")
        out = []
        for start in range(0, len(texts), batch_size):
            idx = index[start : start + batch_size].to(vision.device)
            tok = self.encoder.tokenize(texts[start : start + batch_size])
            lg = self.encoder.itm_logits(vision[idx], tok["input_ids"], tok["attention_mask"]).float()  # (b, 2)
            out.append((lg if output == "logits" else lg.softmax(-1)[:, 1]).cpu())
        return torch.cat(out) if out else torch.empty(0, 2) if output == "logits" else torch.empty(0)

    # ------------------------------------------------------------------ captions
    @_inference
    def caption(self, images: Any = None, *, queries: Tensor | None = None, style: str = "fashiongen",
                num_beams: int = 1, max_new_tokens: int = 48, repetition_penalty: float = 1.0,
                batch_size: int = 32) -> list[str]:
        """Captions of images (or of given query outputs Z, e.g. `composed_queries`), in a dataset's
        style: "fashiongen" (professional description), "fashion200k" (short), "fashioniq"."""
        self._require("caption")
        if (images is None) == (queries is None):
            raise ValueError("caption needs exactly one of images or queries")
        gen = {"num_beams": num_beams, "max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty}
        out: list[str] = []
        if queries is not None:
            for start in range(0, queries.shape[0], batch_size):
                z = queries[start : start + batch_size].to(self.device)
                out += self.captioner.generate(z, [style] * z.shape[0], **gen)
            return out
        for px in self._batches(images, batch_size, "caption"):
            z = self.encoder.encode_image(px).query_output  # (b, Q, H)
            out += self.captioner.generate(z, [style] * px.shape[0], **gen)
        return out

    # ------------------------------------------------------------------ images
    @_inference
    def generate_tensors(self, images: Any = None, texts: str | Sequence[str] | None = None, *,
                         queries: Tensor | None = None, conditions: dict[str, Tensor] | None = None,
                         sampler: Sampler = "dpmsolver++", steps: int = 20, guidance_scale: float | None = None,
                         seed: int = 1234, batch_size: int = 16) -> Tensor:
        """Generated images, float (B, 3, H, W) in [0, 1], on the CPU (see `generate`)."""
        self._require("generate")
        if queries is None:
            if images is None and texts is None:
                raise ValueError("generate needs images, texts, images + texts, or queries")
            if texts is None:
                queries = self.image_queries(images)
            else:
                texts = self._texts(texts)
                if images is None:  # text alone: a composed query on an empty (white) canvas
                    size = self.encoder.config.image_size
                    images = [Image.new("RGB", (size, size), (255, 255, 255))] * len(texts)
                queries = self.composed_queries(images, texts)
        outs = []
        for start in _progress(range(0, queries.shape[0], batch_size), -(-queries.shape[0] // batch_size),
                               "generate", self.show_progress):
            z = queries[start : start + batch_size].to(self.device)
            cond = None
            if conditions:
                cond = {k: v[start : start + batch_size].to(self.device) for k, v in conditions.items()}
            g = torch.Generator().manual_seed(seed + start)
            outs.append(self.generator.sample(z, cond, sampler=sampler, steps=steps, guidance_scale=guidance_scale,
                                              generator=g).float().cpu())
        return torch.cat(outs)

    def generate(self, images: Any = None, texts: str | Sequence[str] | None = None, **kwargs) -> list[Image.Image]:
        """Images generated from image queries (q2I, eq. 7), from reference image + modifying text
        (composed, eq. 12), from text alone (composed on an empty canvas), or from `queries=` Z.

        Keyword args: queries, conditions (try-on/design: inpaint_mask, pose_map, sketch, ...),
        sampler ("pndm" = the paper's PLMS, "dpmsolver++", "ddim"), steps, guidance_scale, seed,
        batch_size.
        """
        return [to_pil(x) for x in self.generate_tensors(images, texts, **kwargs)]

    # ------------------------------------------------------------------ gallery
    def index(self, images: Any, ids: Sequence[Any] | None = None, *, captions: Sequence[str] | None = None,
              settings: IndexSettings | None = None, batch_size: int = 64) -> GalleryIndex:
        """Indexes a gallery: its images' query features (and, for composed search, the features of
        one caption per gallery image: pass `captions`, e.g. `model.caption(images, style="fashioniq")`)."""
        feats = self.embed_images(images, batch_size)  # (N, Q, E)
        ids = list(range(feats.shape[0])) if ids is None else list(ids)
        caption_feats = self.embed_texts(list(captions)) if captions is not None else None
        return GalleryIndex(self, FeatureIndex(feats, ids, settings), caption_feats)


def to_pil(image: Tensor) -> Image.Image:
    """float (3, H, W) in [0, 1] -> RGB PIL image."""
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


class GalleryIndex:
    """A searchable gallery bound to a model: text, image, and composed (image + modifier) search.

    Args:
        model: the `UniFashion` model whose features the gallery holds.
        features: the multi-vector feature index (`unifashion.index.GalleryIndex`).
        caption_features: float (N, E) features of one caption per gallery image, or None; the
            composed score adds `caption_weight` x their similarity (the paper's caption term).
    """

    CAPTIONS_FILE = "caption_features.pt"

    def __init__(self, model: UniFashion, features: FeatureIndex, caption_features: Tensor | None = None) -> None:
        self.model = model
        self.features = features
        if caption_features is not None and caption_features.shape[0] != len(features):
            raise ValueError(f"{caption_features.shape[0]} caption features for a gallery of {len(features)} images")
        self.caption_features = caption_features

    def __len__(self) -> int:
        return len(self.features)

    def search(self, text: str | None = None, image: ImageLike | None = None, modifier: str | None = None,
               k: int = 10, caption_weight: float = 1.0, exclude: Sequence[Any] = ()) -> list[tuple[Any, float]]:
        """The k best gallery items, best first, as (id, score).

        - `text`: text -> image, score max_q(image_q . text) (eq. 3);
        - `image`: image -> image (see `unifashion.index` for the similarity);
        - `image` + `modifier`: composed retrieval, max_q(image_q . e_cls) + caption_weight x
          (caption . e_cls) when the gallery holds caption features;
        - `exclude`: ids left out of the results (e.g. the reference image itself).
        """
        if exclude:
            skip = set(exclude)
            hits = self.search(text, image, modifier, min(len(self), k + len(skip)), caption_weight)
            return [h for h in hits if h[0] not in skip][:k]
        if modifier is not None:
            if image is None:
                raise ValueError("search(modifier=...) needs the reference image too")
            query = self.model.compose([image], [modifier])  # (1, E)
            if self.caption_features is None or caption_weight == 0:
                return self.features.search(query, k)[0]
            return self._search_with_captions(query, k, caption_weight)
        if text is not None and image is not None:
            raise ValueError("search takes text, image, or image + modifier")
        if text is not None:
            return self.features.search(self.model.embed_texts([text]), k)[0]
        if image is not None:
            return self.features.search_image(self.model.embed_images([image])[0], k)
        raise ValueError("search needs text=, image= or image= + modifier=")

    def _search_with_captions(self, query: Tensor, k: int, weight: float) -> list[tuple[Any, float]]:
        """Exact composed score over every gallery image (image term + weight x caption term)."""
        vectors = torch.from_numpy(self.features.vectors())  # (N, Q, E)
        image_term = score_matrix(vectors, query.float()).t()  # (1, N) exact max-over-queries (eq. 3)
        caption_term = query.float() @ self.caption_features.float().t()  # (1, N)
        scores = (image_term + weight * caption_term)[0]
        top = scores.topk(min(k, scores.numel()))
        ids = self.features.ids
        return [(ids[int(i)], float(s)) for s, i in zip(top.values, top.indices)]

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        self.features.save(directory)
        if self.caption_features is not None:
            torch.save(self.caption_features, directory / self.CAPTIONS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, model: UniFashion) -> GalleryIndex:
        directory = Path(directory)
        features = FeatureIndex.load(directory)
        captions = directory / cls.CAPTIONS_FILE
        caption_features = torch.load(captions, map_location="cpu") if captions.is_file() else None
        return cls(model, features, caption_features)
