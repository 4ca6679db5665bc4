"""The bad-input catalogue: every broken input gives a clear error naming the file, key or value, or
(``on_bad_sample="skip"``) a counted skip. One parametrised test; README "Bad inputs" lists it.

A case is ``(dataset, break_it, act, expect)``: `break_it` damages a fixture written in the official
layout, `act` loads it, `expect` is either ``Raises(type, pattern)`` (the message must match: it
names the file, key or value) or ``Skips(reason, n)`` (under ``on_bad_sample="skip"`` exactly `n`
samples are counted under `reason`, and loading completes).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from fixtures_data import FG_TRAIN, truncated_png, write_fashion200k, write_fashiongen, write_fashioniq
from fixtures_vitonhd import write_vitonhd
from tiny import tiny_encoder_config

from unifashion.cli import main
from unifashion.data.errors import BadSampleError
from unifashion.data.fashion200k import Fashion200KDataModule
from unifashion.data.fashiongen import FashionGenDataModule
from unifashion.data.fashioniq import FashionIQDataModule
from unifashion.data.vitonhd import VitonHDDataModule
from unifashion.models.tokenizers import train_wordpiece_tokenizer
from unifashion.module import UniFashionModule

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Raises:
    """The action raises `error` whose message matches `pattern` (regex, searched)."""

    error: type[BaseException]
    pattern: str


@dataclass
class Skips:
    """Under on_bad_sample="skip" the action completes with `n` skips counted under `reason`."""

    reason: str
    n: int


# ---------------------------------------------------------------------------------------- writers / breakers


def _set_column(path: Path, key: str, values) -> None:
    with h5py.File(path, "r+") as f:
        del f[key]
        f[key] = values


def _fg_description(row: int, value: bytes):
    def brk(root: Path) -> None:
        descs = [[r[2]] for r in FG_TRAIN]
        descs[row] = [value]
        _set_column(root / "fashiongen_256_256_train.h5", "input_description", np.array(descs, dtype="S64"))
    return brk


def _truncate(rel: str, keep: float):
    def brk(root: Path) -> None:
        p = root / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return brk


def _write(rel: str, data: bytes | str):
    def brk(root: Path) -> None:
        p = root / rel
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return brk


def _delete(rel: str):
    return lambda root: (root / rel).unlink()


def _edit_json(rel: str, edit: Callable):
    def brk(root: Path) -> None:
        p = root / rel
        data = json.loads(p.read_text())
        edit(data)
        p.write_text(json.dumps(data))
    return brk


def _truncated_image(rel: str):
    return lambda root: truncated_png(root / rel)


# ---------------------------------------------------------------------------------------- loaders


def _fashiongen(root: Path, policy: str, **kw):
    dm = FashionGenDataModule(str(root), image_size=16, on_bad_sample=policy, **kw)
    dm.setup("fit")
    len(dm.pairs_dataset("train")), dm.retrieval_split("validation")
    return dm


def _fashion200k(root: Path, policy: str):
    dm = Fashion200KDataModule(str(root), image_size=16, on_bad_sample=policy)
    dm.setup("fit")
    for split in ("train", "test"):
        ds = dm.pairs_dataset(split)
        [ds[i] for i in range(len(ds))]  # decode every image
    dm.test_queries()
    return dm


def _fashioniq(root: Path, policy: str, **kw):
    dm = FashionIQDataModule(str(root), image_size=16, on_bad_sample=policy, **kw)
    dm.setup("fit")
    for ds in (dm.triplet_dataset("train"), dm.triplet_dataset("val")):
        [ds[i] for i in range(len(ds))]
    if kw.get("captions_file"):
        dm.caption_pairs()
    return dm


def _vitonhd(root: Path, policy: str):
    dm = VitonHDDataModule(str(root), height=16, width=12, encoder_image_size=16, on_bad_sample=policy,
                           max_val_items=None)
    dm.setup("fit")
    ds = dm.dataset("train", "paired")
    [ds[i] for i in range(len(ds))]
    ds = dm.dataset("test", "paired")
    [ds[i] for i in range(len(ds))]
    return dm


FG, F200, FIQ, VITON = "fashiongen", "fashion200k", "fashioniq", "vitonhd"
WRITERS = {FG: write_fashiongen, F200: write_fashion200k, VITON: write_vitonhd,
           FIQ: lambda root: write_fashioniq(root.parent if root.name == "fashionIQ_dataset" else root)}
LOADERS = {FG: _fashiongen, F200: _fashion200k, FIQ: _fashioniq, VITON: _vitonhd}
FIQ_DIR = "fashionIQ_dataset"
F200_IMG = "women/dresses/cocktail_dresses/60000002/60000002_0.jpeg"

# (id, dataset, breaker, loader kwargs, expectation under "raise", expectation under "skip" or None)
CASES = [
    # ---- missing root / missing file
    ("fashiongen-missing-root", FG, "root", {}, Raises(FileNotFoundError, r"absent.*does not exist"), None),
    ("fashion200k-missing-root", F200, "root", {}, Raises(FileNotFoundError, r"absent.*does not exist"), None),
    ("fashioniq-missing-root", FIQ, "root", {}, Raises(FileNotFoundError, r"Fashion-IQ root .*absent"), None),
    ("vitonhd-missing-root", VITON, "root", {}, Raises(FileNotFoundError, r"absent.*does not exist"), None),
    ("fashiongen-missing-file", FG, _delete("fashiongen_256_256_validation.h5"), {},
     Raises(FileNotFoundError, r"fashiongen_256_256_validation\.h5 not found"), None),
    ("fashion200k-missing-label-file", F200, _delete("labels/dress_test_detect_all.txt"), {},
     Raises(FileNotFoundError, r"\*_test_detect_all\.txt"), None),
    ("fashioniq-missing-caption-file", FIQ, _delete(f"{FIQ_DIR}/captions/cap.dress.val.json"), {},
     Raises(BadSampleError, r"cap\.dress\.val\.json: file not found"), Skips("missing_file", 1)),
    ("vitonhd-missing-pair-file", VITON, _delete("train_pairs.txt"), {},
     Raises(BadSampleError, r"train_pairs\.txt: pair file not found"), None),
    # ---- HDF5
    ("fashiongen-missing-required-key", FG, lambda r: write_fashiongen(r, drop_key="input_description"), {},
     Raises(BadSampleError, r"train\.h5: HDF5 key 'input_description' missing \(required\)"), None),
    ("fashiongen-missing-optional-key", FG, lambda r: write_fashiongen(r, drop_key="input_subcategory"), {},
     Raises(BadSampleError, r"train\.h5: HDF5 key 'input_subcategory' missing"), Skips("missing_key", 2)),
    ("fashiongen-truncated-hdf5", FG, _truncate("fashiongen_256_256_train.h5", 0.6), {},
     Raises(BadSampleError, r"train\.h5: .*(truncated|cannot read).*\[corrupt_file\]"), None),
    ("fashiongen-not-hdf5", FG, _write("fashiongen_256_256_train.h5", b"<html>404</html>"), {},
     Raises(BadSampleError, r"train\.h5: cannot read the HDF5 file"), None),
    ("fashiongen-unequal-lengths", FG,
     lambda r: _set_column(r / "fashiongen_256_256_train.h5", "input_productID", np.arange(6)[:, None]), {},
     Raises(BadSampleError, r"train\.h5: HDF5 key 'input_productID' has 6 rows, 'input_image' has 7"), None),
    # ---- images
    ("fashion200k-image-missing", F200, _delete(F200_IMG), {},
     Raises(BadSampleError, r"60000002_0\.jpeg: image listed in .*dress_test_detect_all\.txt:3 not found"),
     Skips("missing_file", 1)),  # (and the query naming it: missing_key)
    ("fashion200k-corrupt-image", F200, _write(F200_IMG, b"not an image"), {},
     Raises(BadSampleError, r"60000002_0\.jpeg: cannot decode image"), Skips("corrupt_image", 1)),
    ("fashion200k-truncated-image", F200, _truncated_image(F200_IMG), {},
     Raises(BadSampleError, r"60000002_0\.jpeg: cannot decode image"), Skips("corrupt_image", 1)),
    ("fashioniq-truncated-image", FIQ, _truncated_image(f"{FIQ_DIR}/images/D4.png"), {},
     Raises(BadSampleError, r"D4\.png: cannot decode image"), Skips("corrupt_image", 2)),  # D4 in 2 val triplets
    ("vitonhd-truncated-image", VITON, _truncated_image("train/cloth/00001_00.jpg"), {},
     Raises(BadSampleError, r"00001_00\.jpg: cannot decode image"), Skips("corrupt_image", 1)),
    ("vitonhd-missing-cloth", VITON, _delete("train/cloth/00001_00.jpg"), {},
     Raises(BadSampleError, r"cloth/00001_00\.jpg: cloth file of pair"), Skips("missing_file", 1)),
    # ---- JSON
    ("fashioniq-malformed-json", FIQ, _write(f"{FIQ_DIR}/captions/cap.shirt.train.json", "[{\"candidate\": "), {},
     Raises(BadSampleError, r"cap\.shirt\.train\.json: invalid JSON"), Skips("malformed_json", 1)),
    ("fashioniq-wrong-structure", FIQ, _write(f"{FIQ_DIR}/image_splits/split.dress.val.json", "{\"D4\": 1}"), {},
     Raises(BadSampleError, r"split\.dress\.val\.json: top level is dict"), Skips("malformed_json", 1)),
    ("vitonhd-malformed-openpose", VITON, _write("train/openpose_json/00002_00_keypoints.json", "{\"people\": [{"),
     {}, Raises(BadSampleError, r"00002_00_keypoints\.json: invalid JSON"), Skips("malformed_json", 1)),
    ("vitonhd-malformed-captions", VITON, _write("captions.json", "{"), {},
     Raises(BadSampleError, r"captions\.json: invalid JSON"), None),
    # ---- empty texts
    ("fashiongen-empty-description", FG, _fg_description(3, b"  "), {},
     Raises(BadSampleError, r"train\.h5: row 3 \(product 102\): input_description is empty"), Skips("empty_text", 1)),
    ("fashion200k-empty-description", F200,
     _write("labels/dress_train_detect_all.txt",
            "women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg\t-1.0\t \n"
            "women/dresses/cocktail_dresses/51727900/51727900_0.jpeg\t-1.0\tred lace dress\n"), {},
     Raises(BadSampleError, r"dress_train_detect_all\.txt:1: empty description"), Skips("empty_text", 1)),
    ("fashioniq-one-empty-caption-loads", FIQ, lambda r: None, {}, None, None),  # fixture has "" and "  " captions
    ("fashioniq-both-captions-empty", FIQ,
     _edit_json(f"{FIQ_DIR}/captions/cap.shirt.train.json", lambda d: d[0].update(captions=["", " . "])), {},
     Raises(BadSampleError, r"cap\.shirt\.train\.json: entry 0 \(S1 -> S2\): both captions are empty"),
     Skips("empty_text", 1)),
    ("fashioniq-cap-empty-caption", FIQ,
     _write(f"{FIQ_DIR}/caps.json", json.dumps([{"image": "D1", "caption": "red"}, {"image": "D2", "caption": " "}])),
     {"captions_file": "caps.json"},
     Raises(BadSampleError, r"caps\.json: entry 1 \(D2\): empty caption"), Skips("empty_text", 1)),
    ("vitonhd-empty-caption", VITON, _edit_json("captions.json", lambda d: d["00001"].__setitem__(1, "")), {},
     Raises(BadSampleError, r"captions\.json: id '00001': empty caption"), Skips("empty_text", 1)),
    # ---- encodings
    ("fashiongen-control-bytes", FG, _fg_description(2, b"Caf\xc3\xa9 \x92quoted\x92"), {},
     Raises(BadSampleError, r"train\.h5: row 2 \(product 101\): control byte 0x92"), Skips("bad_encoding", 1)),
    ("fashion200k-not-utf8", F200,
     _write("labels/dress_test_detect_all.txt",
            b"women/dresses/cocktail_dresses/60000001/60000001_0.jpeg\t-1.0\tblue lace dress\n"
            + b"women/dresses/cocktail_dresses/60000001/60000001_1.jpeg\t-1.0\tblue \xe9 dress\n"), {},
     Raises(BadSampleError, r"dress_test_detect_all\.txt:2: byte b'\\xe9' at column \d+ is not valid utf-8"),
     Skips("bad_encoding", 1)),
    ("fashioniq-not-utf8", FIQ, _write(f"{FIQ_DIR}/image_splits/split.shirt.val.json", b'["S3", "\xff"]'), {},
     Raises(BadSampleError, r"split\.shirt\.val\.json: byte b'\\xff' at offset 8 is not valid UTF-8"),
     Skips("bad_encoding", 1)),
    ("vitonhd-pairs-not-utf8", VITON, _write("train_pairs.txt", b"00001_00.jpg 00002_00.jpg\n0000\xff.jpg x.jpg\n"), {},
     Raises(BadSampleError, r"train_pairs\.txt:2: byte b'\\xff'"), Skips("bad_encoding", 1)),
    # ---- captions naming images that do not exist
    ("fashioniq-caption-names-missing-image", FIQ,
     _edit_json(f"{FIQ_DIR}/captions/cap.dress.train.json",
                lambda d: d.append({"candidate": "D1", "target": "NOPE", "captions": ["a", "b"]})), {},
     Raises(BadSampleError, r"NOPE\.png: no image NOPE\.png or NOPE\.jpg \(referenced by .*cap\.dress\.train\.json entry 2\)"),
     Skips("missing_file", 1)),
    ("fashion200k-query-names-unknown-image", F200, _write("test_queries.txt", "women/x/1/1_0.jpeg " + F200_IMG + "\n"),
     {}, Raises(BadSampleError, r"test_queries\.txt:1: query image\(s\) \['women/x/1/1_0\.jpeg'\]"),
     Skips("missing_key", 1)),
    ("vitonhd-pair-without-captions", VITON, _edit_json("captions.json", lambda d: d.pop("00002")), {},
     Raises(BadSampleError, r"captions\.json: no captions for id '00002'"), Skips("missing_key", 1)),
]
ROOT_CASE = "root"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path):
    name, dataset, brk, kwargs, on_raise, on_skip = case
    root = tmp_path / dataset
    WRITERS[dataset](root)
    if brk == ROOT_CASE:
        root = tmp_path / "absent"
    else:
        brk(root)
    load = LOADERS[dataset]
    if on_raise is None:  # loads cleanly, nothing skipped
        dm = load(root, "raise", **kwargs)
        assert sum(dm.skip_counts.values()) == 0
        if name == "fashioniq-one-empty-caption-loads":
            texts = {(t.candidate, t.target): t.captions for t in dm.triplets("dress", "val")}
            assert texts[("D6", "D4")] == ["", "is blue."]
        return
    with pytest.raises(on_raise.error) as err:
        load(root, "raise", **kwargs)
    message = str(err.value)
    assert re.search(on_raise.pattern, message), message
    if on_skip is not None:
        dm = load(root, "skip", **kwargs)
        counts = {k: v for k, v in dm.skip_counts.items() if v}
        assert counts.get(on_skip.reason) == on_skip.n, counts


# ---------------------------------------------------------------------------------------- model / CLI inputs


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_wordpiece_tokenizer(["red blue shirt dress cotton"] * 5, d / "tok", vocab_size=100)
    return d / "tok"


def _fit_ckpt(module, tmp_path, name):
    dm_root = tmp_path / "fg"
    if not dm_root.exists():
        write_fashiongen(dm_root)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(module, FashionGenDataModule(str(dm_root), batch_size=4, image_size=16))
    trainer.save_checkpoint(tmp_path / name)
    return tmp_path / name


MODEL_CASES = [
    "unknown-phase", "cli-unknown-phase", "cli-wrong-type", "out-of-range-batch-size", "out-of-range-label-smoothing",
    "unknown-on-bad-sample", "unknown-loss-term", "checkpoint-of-another-phase", "truncated-checkpoint-init-from",
    "truncated-checkpoint-resume",
]


@pytest.mark.parametrize("case", MODEL_CASES)
def test_bad_model_input(case, tok, tmp_path, capsys, caplog):
    enc = tiny_encoder_config(tok)
    cfg = str(REPO / "lightning_configs/tiny/phase1_retrieval.yaml")
    if case == "unknown-phase":
        with pytest.raises(ValueError, match=r"unknown phase 'phase3'; known phases"):
            UniFashionModule(enc, phase="phase3")
    elif case in ("cli-unknown-phase", "cli-wrong-type"):
        arg = ["--model.phase", "phase3"] if case == "cli-unknown-phase" else ["--data.init_args.batch_size", "many"]
        with pytest.raises(SystemExit) as err:
            main(["fit", "--config", cfg, *arg])
        assert err.value.code != 0
        assert ("phase3" if case == "cli-unknown-phase" else "many") in capsys.readouterr().err
    elif case == "out-of-range-batch-size":
        with pytest.raises(ValueError, match=r"batch_size must be positive, got 0"):
            FashionGenDataModule("x", batch_size=0)
    elif case == "out-of-range-label-smoothing":
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.5"):
            UniFashionModule(enc, label_smoothing=1.5)
    elif case == "unknown-on-bad-sample":
        with pytest.raises(ValueError, match=r"on_bad_sample must be 'raise' or 'skip', got 'ignore'"):
            FashionGenDataModule("x", on_bad_sample="ignore")
    elif case == "unknown-loss-term":
        with pytest.raises(ValueError, match=r"loss term 'itg' is not part of phase 'phase1_retrieval'"):
            UniFashionModule(enc, loss_weights={"itg": 1.0})
    elif case == "checkpoint-of-another-phase":
        L.seed_everything(0)
        ckpt = _fit_ckpt(UniFashionModule(enc), tmp_path, "retrieval.ckpt")
        other = UniFashionModule(enc, phase="phase1_image_generation",
                                 generator=dict(pixel_space=True, num_queries=4, height=8, width=8, sample_size=8,
                                                block_out_channels=(16, 32), attention_from_block=0,
                                                cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8))
        trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path)
        with pytest.raises((ValueError, RuntimeError, KeyError)) as err:
            trainer.fit(other, FashionGenDataModule(str(tmp_path / "fg"), batch_size=4, image_size=16), ckpt_path=ckpt)
        # resuming (ckpt_path) a retrieval checkpoint into an image-generation run: the keys it lacks are named
        assert re.search(r"checkpoint lacks \d+ weights .*'generator\.", str(err.value)), str(err.value)[:2000]
    elif case.startswith("truncated-checkpoint"):
        L.seed_everything(0)
        ckpt = _fit_ckpt(UniFashionModule(enc), tmp_path, "retrieval.ckpt")
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
        if case == "truncated-checkpoint-init-from":
            with pytest.raises(Exception) as err:
                UniFashionModule(enc, init_from=str(ckpt))
            assert re.search(r"retrieval\.ckpt: cannot read the checkpoint .*truncated", str(err.value)), err.value
        else:  # Lightning reads it: its error says "corrupted", the log line just before names the file
            trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path)
            with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="checkpoint file is corrupted"):
                trainer.fit(UniFashionModule(enc), FashionGenDataModule(str(tmp_path / "fg"), batch_size=4,
                                                                        image_size=16), ckpt_path=ckpt)
            assert f"Restoring states from the checkpoint path at {ckpt}" in caplog.text
    else:
        raise AssertionError(case)
    torch.set_num_threads(1)
