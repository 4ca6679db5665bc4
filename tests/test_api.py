"""The front door (`unifashion.UniFashion`) against the code paths it wraps, its gallery index against
the evaluation's exact scores, and `python -m unifashion`, `unifashion test|predict|index|search`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from test_captioning_pipeline import captioner_config, write_caption_fixture
from test_generation_pipeline import GEN
from tiny import tiny_encoder_config

from unifashion import GalleryIndex, UniFashion
from unifashion.cli import main
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.data.transforms import ImageTransform
from unifashion.models.generator import GeneratorConfig
from unifashion.module import UniFashionModule
from unifashion.scoring import score_matrix
from unifashion.tasks.cmr.evaluate import SplitImages

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_caption_fixture(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def module(root):
    L.seed_everything(0)
    return UniFashionModule(tiny_encoder_config(root / "qtok"), captioner=captioner_config(root / "ltok"),
                            generator=GeneratorConfig(**{**GEN, "num_queries": 4}), phase="phase1_generative")


@pytest.fixture(scope="module")
def model(module):
    return UniFashion(module.eval(), show_progress=False)


@pytest.fixture(scope="module")
def split(root, model):
    dm = FashionGenDataModule(root=str(root / "fashiongen"), image_size=model.encoder.config.image_size)
    return dm.retrieval_split("validation")


def _pil_images(n: int, size: int = 40) -> list[Image.Image]:
    g = torch.Generator().manual_seed(3)
    return [Image.fromarray((torch.rand(size, size + 8, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_embeddings_equal_the_encoder_paths(model, tmp_path):
    images = _pil_images(3)
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    pixels = torch.stack([ImageTransform(size=model.encoder.config.image_size)(im) for im in images])
    with torch.no_grad():
        enc = model.encoder.encode_image(pixels)
    from_pil = model.embed_images(images, batch_size=2)
    assert from_pil.shape == enc.image_feats.shape  # (N, Q, E)
    torch.testing.assert_close(from_pil, enc.image_feats)
    torch.testing.assert_close(model.embed_images(paths), from_pil)  # paths read like PIL images
    torch.testing.assert_close(model.embed_images(pixels), from_pil)  # a (B, 3, S, S) tensor batch
    torch.testing.assert_close(model.image_queries(images), enc.query_output)
    texts = ["striped shirt", "blue jeans", "leather belt"]
    tok = model.encoder.tokenize(texts)
    with torch.no_grad():
        ref = model.encoder.encode_text(tok["input_ids"], tok["attention_mask"]).text_feat
    torch.testing.assert_close(model.embed_texts(texts, batch_size=2), ref)
    with torch.no_grad():
        z, e_cls = model.encoder.fuse(enc.vision_embeds, tok["input_ids"], tok["attention_mask"])
        itm = model.encoder.itm_logits(enc.vision_embeds, tok["input_ids"], tok["attention_mask"])
    torch.testing.assert_close(model.compose(images, texts), e_cls)
    torch.testing.assert_close(model.composed_queries(images, texts), z)
    torch.testing.assert_close(model.match(images, texts), itm.softmax(-1)[:, 1])
    # distinct images + an index give the same logits as repeated images
    idx = torch.tensor([0, 0, 2])
    torch.testing.assert_close(model.match(images, texts, output="logits"), itm)
    torch.testing.assert_close(model.match(images, texts, image_index=idx, output="logits"),
                               model.match([images[0], images[0], images[2]], texts, output="logits"))
    assert model.temperature == pytest.approx(float(model.encoder.temp))
    # precomputed vision features give the same logits; exactly one of images / vision
    vision = model.vision_features(images)
    torch.testing.assert_close(model.match(None, texts, image_index=torch.arange(3), output="logits", vision=vision),
                               itm)
    with pytest.raises(ValueError, match="exactly one of images or vision"):
        model.match(images, texts, vision=vision)


def test_bad_inputs_are_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        model.embed_images([tmp_path / "nope.png"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        model.embed_images([tmp_path / "broken.png"])
    with pytest.raises(ValueError, match=r"\(B, 3"):
        model.embed_images(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match="one modifying text per image"):
        model.compose(_pil_images(2), ["only one"])
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        UniFashion.from_checkpoint(tmp_path / "missing.ckpt")


def test_mode_is_restored(module):
    model = UniFashion(module.train(), show_progress=False)
    seen = {}
    def record(mod, args):
        seen["training"] = mod.training

    hook = model.encoder.model.qformer.register_forward_pre_hook(record)
    model.embed_texts(["shirt"])
    hook.remove()
    assert seen["training"] is False  # the API ran the encoder in eval mode ...
    assert module.training  # ... and gave the module its training mode back
    module.eval()


def test_caption_and_generate_equal_the_submodules(model):
    images = _pil_images(2)
    z = model.image_queries(images)
    with torch.no_grad():
        ref = model.captioner.generate(z, ["fashiongen"] * 2, max_new_tokens=6)
    assert model.caption(images, max_new_tokens=6) == ref
    assert model.caption(queries=z, max_new_tokens=6) == ref
    out = model.generate_tensors(images, steps=2, sampler="ddim", seed=7)
    with torch.no_grad():
        ref_img = model.generator.sample(z, sampler="ddim", steps=2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, ref_img.float())
    pics = model.generate(images, steps=2, sampler="ddim", seed=7)
    assert len(pics) == 2 and pics[0].size == (GEN["width"], GEN["height"])
    assert model.capabilities.caption and model.capabilities.generate and not model.capabilities.compose


def test_gallery_search_returns_what_score_matrix_ranks(model, split, tmp_path):
    images = SplitImages(split.images)
    ids = [f"row{i}" for i in range(len(images))]
    gallery = model.index(images, ids=ids)
    feats = model.embed_images(images)
    for text in split.texts:
        scores = score_matrix(feats, model.embed_texts([text]))[:, 0]  # (N,) the evaluation's scores
        order = sorted(range(len(ids)), key=lambda i: (-scores[i].item(), i))[:3]
        hits = gallery.search(text=text, k=3)
        assert [h[0] for h in hits] == [ids[i] for i in order]
        torch.testing.assert_close(torch.tensor([h[1] for h in hits]), scores[order])
    # image -> image: max over both query sets, against a naive loop
    naive = torch.tensor([max(float(a @ b) for a in feats[1] for b in feats[i]) for i in range(len(ids))])
    hits = gallery.search(image=images[1], k=len(ids))
    torch.testing.assert_close(torch.tensor([h[1] for h in hits]), naive.sort(descending=True).values)
    # composed, with a caption term: image term + w x caption term over the whole gallery
    captions = [f"caption {i}" for i in range(len(images))]
    gallery = model.index(images, ids=ids, captions=captions)
    q = model.compose([images[0]], ["is darker"])
    expected = score_matrix(feats, q)[:, 0] + 0.5 * (model.embed_texts(captions) @ q[0])
    hits = gallery.search(image=images[0], modifier="is darker", k=len(ids), caption_weight=0.5)
    torch.testing.assert_close(torch.tensor([h[1] for h in hits]), expected.sort(descending=True).values)
    # save / load
    loaded = GalleryIndex.load(gallery.save(tmp_path / "idx"), model)
    assert loaded.search(text=split.texts[0], k=3) == gallery.search(text=split.texts[0], k=3)
    assert loaded.search(image=images[0], modifier="is darker", k=3) == gallery.search(
        image=images[0], modifier="is darker", k=3)


def test_python_dash_m_is_the_command():
    out = subprocess.run([sys.executable, "-m", "unifashion", "--help"], capture_output=True, text=True, check=True)
    for verb in ("eval", "caption", "generate", "compose", "index", "search", "plan", "demo"):
        assert verb in out.stdout


@pytest.fixture(scope="module")
def retrieval_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_api")
    assert main(["data", "synth", "--out", str(out), "--scale", "tiny", "--datasets", "fashiongen",
                 "--lm-steps", "0", "--vae-steps", "0"]) == 0
    run = out / "run"
    args = ["--config", str(ROOT / "lightning_configs" / "tiny" / "phase1_retrieval.yaml"),
            "--trainer.max_steps", "2", "--trainer.default_root_dir", str(run),
            "--trainer.logger.init_args.save_dir", str(run), "--trainer.enable_progress_bar", "false",
            "--data.init_args.root", str(out / "fashiongen"), "--data.init_args.batch_size", "8",
            "--data.init_args.num_workers", "0", "--model.encoder.tokenizer", str(out / "tokenizers" / "qformer")]
    main(["fit", *args])
    return out, run, args, next(run.rglob("last.ckpt"))


def test_test_predict_index_and_search_verbs(retrieval_ckpt, tmp_path, capsys):
    out, run, args, ckpt = retrieval_ckpt
    from unifashion.lightning_cli import lightning_main

    cli = lightning_main(args + ["--trainer.limit_test_batches", "1", "--trainer.limit_predict_batches", "1"],
                         run=False)
    tested = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=str(ckpt))
    assert "test/loss_itc" in tested[0] and tested[0]["test/loss"] > 0
    preds = cli.trainer.predict(cli.model, cli.datamodule, ckpt_path=str(ckpt))
    model = UniFashion.from_checkpoint(ckpt, device="cpu", show_progress=False)
    batch = next(iter(cli.datamodule.predict_dataloader()))
    torch.testing.assert_close(preds[0]["image_feats"], model.embed_images(batch["image"]))
    # index build / search on a folder of images
    gallery_dir = tmp_path / "gallery"
    gallery_dir.mkdir()
    for i, im in enumerate(_pil_images(4)):
        im.save(gallery_dir / f"g{i}.png")
    assert main(["index", "build", "--ckpt", str(ckpt), "--images", str(gallery_dir), "--out",
                 str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--image", str(gallery_dir / "g2.png"), "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[1] == "g2.png"
