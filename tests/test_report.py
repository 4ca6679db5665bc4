"""metrics.json merging and the fixed-width report tables."""

from __future__ import annotations

import json

import pytest
import torch

from unifashion.tasks import report
from unifashion.tasks.report import PAPER_NUMBERS, format_table, load_metrics, main, update_metrics_json


def test_update_metrics_json_merges_sorted(tmp_path):
    run = tmp_path / "runs" / "a"  # does not exist yet
    update_metrics_json(run, {"z/x": 1.0, "cmr/fashiongen/full/i2t/R@1": torch.tensor(12.5)})
    merged = update_metrics_json(run / "metrics.json", {"z/x": 3, "a/b": 2.25})
    assert merged == {"a/b": 2.25, "cmr/fashiongen/full/i2t/R@1": 12.5, "z/x": 3}
    text = (run / "metrics.json").read_text()
    assert json.loads(text) == merged
    assert list(json.loads(text)) == sorted(merged)  # keys written sorted
    assert load_metrics(run) == merged
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "metrics.json.lock"]  # no temp left


def test_update_metrics_json_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="'fic/x/BLEU-4' is not finite"):
        update_metrics_json(tmp_path, {"fic/x/BLEU-4": float("nan")})
    with pytest.raises(ValueError, match="'a/b' must be a number"):
        update_metrics_json(tmp_path, {"a/b": "12"})
    with pytest.raises(ValueError, match="key '/a'"):
        update_metrics_json(tmp_path, {"/a": 1.0})
    assert not (tmp_path / "metrics.json").exists()


def test_update_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    update_metrics_json(tmp_path, {"a/b": 1.0})
    before = (tmp_path / "metrics.json").read_text()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report.json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        update_metrics_json(tmp_path, {"a/c": 2.0})
    assert (tmp_path / "metrics.json").read_text() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_load_metrics_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "metrics.json")):
        load_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="metrics.json is not valid JSON"):
        update_metrics_json(tmp_path, {"a/b": 1.0})


def test_format_table_exact_layout():
    metrics = {
        "cmr/fg/full/i2t/R@1": 12.345,
        "cmr/fg/full/i2t/R@5": 40.0,
        "cmr/fg/full/mean/R": 20.0,
        "baseline/cmr/fg/full/i2t/R@1": 1.0,
        "time/fit_s": 3.5,
    }
    # Row labels padded to 12 ("fg/full/mean"), sources to 8 ("baseline"), numbers right-aligned.
    expected = (
        "== cmr ==\n"
        "                          R@1    R@5      R\n"
        "------------  --------  -----  -----  -----\n"
        "fg/full/i2t   trained   12.35  40.00      -\n"
        "              baseline   1.00      -      -\n"
        "fg/full/mean  trained       -      -  20.00\n"
        "\n"
        "== time ==\n"
        "metric  trained\n"
        "------  -------\n"
        "fit_s      3.50\n"
    )
    assert format_table(metrics) == expected


def _line(table: str, start: str) -> list[str]:
    return next(line for line in table.splitlines() if line.startswith(start)).split()


def test_format_table_baseline_paper_and_generic_sections():
    metrics = {
        "cmr/fashiongen/sample100/i2t/R@1": 50.0,
        "cmr/fashiongen/sample100/t2i/R@1": 40.0,
        "cmr/fashiongen/sample100/mean/R": 60.0,
        "cmr/fashiongen/sample100/i2t/fallback_queries": 3,
        "fic/fashiongen/BLEU-4": 3.2,
        "fic/fashiongen/CIDEr": 10.0,
        "fig/vitonhd/unpaired/FID": 99.5,
        "baseline/fic/fashiongen/BLEU-4": 0.5,
    }
    table = format_table(metrics, baseline={"fic/fashiongen/BLEU-4": 0.7}, paper=PAPER_NUMBERS)
    lines = table.splitlines()
    # Directions in order i2t, t2i, then the mean row, whose paper line follows it.
    rows = [line.split()[0] for line in lines if line.startswith("fashiongen/sample100")]
    assert rows == ["fashiongen/sample100/i2t", "fashiongen/sample100/t2i", "fashiongen/sample100/mean"]
    mean_at = next(i for i, line in enumerate(lines) if line.startswith("fashiongen/sample100/mean"))
    assert lines[mean_at + 1].split() == ["paper", "-", "87.55", "-"]
    assert _line(table, "fashiongen/sample100/i2t") == [
        "fashiongen/sample100/i2t",
        "trained",
        "50.00",
        "-",
        "3",
    ]
    # Captioning: the explicit baseline wins over the baseline/ key; paper numbers in metric order.
    fic_at = lines.index("== fic ==")
    assert lines[fic_at + 1].split() == ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert lines[fic_at + 3].split() == ["fashiongen", "trained", "3.20", "-", "-", "10.00"]
    assert lines[fic_at + 4].split() == ["baseline", "0.70", "-", "-", "-"]
    assert lines[fic_at + 5].split() == ["paper", "35.53", "29.32", "54.59", "169.50"]
    assert _line(table, "vitonhd/unpaired") == ["vitonhd/unpaired", "trained", "99.50", "-"]
    assert table.rstrip().endswith("headline numbers of Tables 1-4.")
    # Paper rows of tasks the run did not evaluate are not shown.
    assert "cir" not in table and "mgd" not in table
    assert "paper" not in format_table(metrics)


def test_report_cli(tmp_path, capsys):
    update_metrics_json(tmp_path / "run", {"cmr/fashiongen/sample100/mean/R": 61.0})
    update_metrics_json(tmp_path / "base", {"cmr/fashiongen/sample100/mean/R": 2.0})
    main([str(tmp_path / "run"), "--baseline", str(tmp_path / "base"), "--paper"])
    out = capsys.readouterr().out
    assert _line(out, "fashiongen/sample100/mean") == ["fashiongen/sample100/mean", "trained", "61.00"]
    lines = [line.split() for line in out.splitlines()]
    assert ["baseline", "2.00"] in lines and ["paper", "87.55"] in lines


def test_demo_loss_summary_reads_the_stage_csv(tmp_path):
    import math

    from unifashion.demo.pipeline import loss_summary

    log = tmp_path / "stage" / "logs" / "version_0"
    log.mkdir(parents=True)
    rows = ["step,train/loss_itm_step,train/loss_itc_step,train/loss_itc_epoch,train/loss_step,train/lr"]
    itm = [0.70, 0.66, 0.64, 0.60, 0.50, 0.40, 0.30]
    for i, v in enumerate(itm):
        rows.append(f"{i},{v},{5 - i},,{v + 5 - i},0.1")
    rows.append("7,,,2.0,")  # an epoch row: no step values
    (log / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = loss_summary(tmp_path / "stage", "retrieval", window=2)
    assert out["loss/retrieval/itm/first"] == pytest.approx(0.68)
    assert out["loss/retrieval/itm/last"] == pytest.approx(0.35)
    assert out["loss/retrieval/itc/first"] == pytest.approx(4.5)
    assert out["loss/retrieval/itc/last"] == pytest.approx(-0.5)
    assert out["loss/retrieval/total/last"] == pytest.approx(0.35 - 0.5)
    # labels [1, 0, 0]: the entropy of a 1/3 - 2/3 coin
    assert out["loss/retrieval/itm/prior"] == pytest.approx(-(math.log(1 / 3) + 2 * math.log(2 / 3)) / 3)
    assert "loss/retrieval/itc/prior" not in out and not any("epoch" in k or "lr" in k for k in out)
    assert loss_summary(tmp_path / "nothing", "x") == {}
