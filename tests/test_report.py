"""Tests for jaxreg.report: metrics reading, overfitting onset, curve PNGs, Markdown and HTML reports."""

import base64
import json
import math
import re

import numpy as np
import pytest

from jaxreg import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_history(val_loss, train_acc, *, train_loss=None, val_acc=None):
    n = len(val_loss)
    train_loss = train_loss if train_loss is not None else np.linspace(2.0, 0.1, n)
    val_acc = val_acc if val_acc is not None else np.linspace(0.3, 0.8, n)
    return [
        {
            "epoch": i + 1,
            "train_loss": float(train_loss[i]),
            "train_accuracy": float(train_acc[i]),
            "val_loss": float(val_loss[i]),
            "val_accuracy": float(val_acc[i]),
            "lr": 0.1,
            "time_s": 1.5,
        }
        for i in range(n)
    ]


def u_shaped(n=12, minimum_at=6):
    """Val loss falls to its minimum at epoch `minimum_at` (1-based), then rises; train acc rises."""
    epochs = np.arange(1, n + 1, dtype=float)
    val = 0.5 + 0.05 * (epochs - minimum_at) ** 2
    acc = np.linspace(0.5, 0.99, n)
    return make_history(val, acc)


# --------------------------------------------------------------------------- read_metrics


def write_lines(path, lines, trailing_newline=True):
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""))


def test_read_metrics_round_trip(tmp_path):
    hist = u_shaped(5)
    hist[2]["val_ece"] = 0.03
    p = tmp_path / "metrics.jsonl"
    write_lines(p, [json.dumps(r) for r in hist])
    assert report.read_metrics(p) == hist


def test_read_metrics_skips_truncated_last_line(tmp_path):
    hist = u_shaped(4)
    p = tmp_path / "metrics.jsonl"
    lines = [json.dumps(r) for r in hist]
    lines.append(json.dumps({"epoch": 5, "train_loss": 0.1})[:17])  # killed mid-write
    write_lines(p, lines, trailing_newline=False)
    got = report.read_metrics(p)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]


def test_read_metrics_corrupt_middle_line_raises(tmp_path):
    p = tmp_path / "metrics.jsonl"
    write_lines(p, ['{"epoch": 1}', '{"epoch": 2', '{"epoch": 3}'])
    with pytest.raises(ValueError, match="line 2"):
        report.read_metrics(p)


def test_read_metrics_resume_dedup_blank_lines_nan(tmp_path):
    p = tmp_path / "metrics.jsonl"
    write_lines(
        p,
        [
            '{"epoch": 1, "val_loss": 1.0}',
            "",
            '{"epoch": 2, "val_loss": NaN}',
            '{"epoch": 2, "val_loss": 0.5}',
            '{"epoch": 3, "val_loss": 0.4}',
        ],
    )
    got = report.read_metrics(p)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert got[1]["val_loss"] == 0.5  # the resumed run's record wins


def test_read_metrics_empty_and_bad_records(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("")
    assert report.read_metrics(p) == []
    write_lines(p, ['{"train_loss": 1.0}', '{"epoch": 2}'])
    with pytest.raises(ValueError, match="epoch"):
        report.read_metrics(p)
    write_lines(p, ["[1, 2]", '{"epoch": 2}'])
    with pytest.raises(ValueError, match="JSON object"):
        report.read_metrics(p)


# --------------------------------------------------------------------------- overfitting_onset


def test_onset_u_shape_detected_at_first_rising_epoch():
    hist = u_shaped(12, minimum_at=6)
    assert report.overfitting_onset(hist) == 7
    assert report.overfitting_onset(hist, patience=5) == 7
    # Needs patience rising epochs: the minimum at 6 leaves 6 epochs after it.
    assert report.overfitting_onset(hist, patience=6) == 7
    assert report.overfitting_onset(hist, patience=7) is None


def test_onset_monotonically_falling_val_loss_is_none():
    hist = make_history(np.linspace(2.0, 0.2, 15), np.linspace(0.3, 0.95, 15))
    assert report.overfitting_onset(hist) is None
    assert report.overfitting_onset(hist, patience=1) is None


def test_onset_val_rising_but_train_acc_falling_is_none():
    n = 12
    epochs = np.arange(1, n + 1, dtype=float)
    val = 0.5 + 0.05 * (epochs - 6) ** 2
    acc = np.concatenate([np.linspace(0.5, 0.8, 6), np.linspace(0.78, 0.4, 6)])  # instability
    assert report.overfitting_onset(make_history(val, acc)) is None


def test_onset_train_acc_compared_with_value_at_minimum():
    # Train accuracy dips right after the minimum, then recovers above it: the run starts later.
    val = [1.0, 0.8, 0.6, 0.7, 0.8, 0.9, 1.0]
    acc = [0.5, 0.6, 0.7, 0.65, 0.75, 0.8, 0.85]
    assert report.overfitting_onset(make_history(val, acc)) == 5


def test_onset_noise_below_min_delta_ignored():
    rng = np.random.default_rng(0)
    n = 20
    val = np.concatenate([np.linspace(1.0, 0.5, 8), 0.5 + rng.uniform(-0.009, 0.009, n - 8)])
    val[-1] = val.max() if val.argmin() == n - 1 else val[-1]  # the minimum is not the last epoch
    acc = np.linspace(0.5, 0.99, n)
    hist = make_history(val, acc)
    assert report.overfitting_onset(hist, min_delta=0.02) is None
    # The same noise trips the detector without min_delta.
    assert report.overfitting_onset(hist, min_delta=0.0, patience=1) is not None


def test_onset_min_delta_flat_epochs_then_real_rise():
    # Epoch 3 is within min_delta of the minimum (noise): the rise starts at epoch 4.
    val = [1.0, 0.5, 0.51, 0.6, 0.7, 0.8]
    acc = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    assert report.overfitting_onset(make_history(val, acc), min_delta=0.05) == 4
    # Below patience a single high epoch between flats is not enough.
    val = [1.0, 0.5, 0.6, 0.51, 0.52, 0.5]
    assert report.overfitting_onset(make_history(val, acc), min_delta=0.05) is None


def test_onset_with_training_accuracy_saturated_at_one():
    val = [1.0, 0.5, 0.4, 0.45, 0.55, 0.6, 0.7]
    acc = [0.8, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert report.overfitting_onset(make_history(val, acc)) == 4


def test_onset_counts_from_the_global_minimum():
    # The rise at epoch 3 is followed by a lower minimum (epoch 4): not overfitting yet.
    val = [1.0, 0.5, 0.6, 0.4, 0.45, 0.5, 0.55]
    acc = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9]
    assert report.overfitting_onset(make_history(val, acc), patience=2) == 5
    assert report.overfitting_onset(make_history(val, acc), patience=1) == 5


def test_onset_rel_delta_ignores_small_relative_noise():
    val = [1.0, 0.5, 0.4, 0.41, 0.415, 0.412, 0.5, 0.6]
    acc = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert report.overfitting_onset(make_history(val, acc)) == 4
    assert report.overfitting_onset(make_history(val, acc), rel_delta=0.05) == 7
    with pytest.raises(ValueError, match="rel_delta"):
        report.overfitting_onset(make_history(val, acc), rel_delta=-1.0)


def test_onset_nan_and_short_histories():
    assert report.overfitting_onset([]) is None
    assert report.overfitting_onset(make_history([0.5], [0.5])) is None
    assert report.overfitting_onset(make_history([0.5, 0.6], [0.5, 0.6])) is None
    assert report.overfitting_onset(make_history([0.5, 0.6], [0.5, 0.6]), patience=1) == 2
    # NaN epochs are never minima and break a run.
    val = [math.nan, 1.0, 0.5, 0.6, math.nan, 0.7, 0.8]
    acc = [0.1, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9]
    assert report.overfitting_onset(make_history(val, acc)) == 6
    all_nan = make_history([math.nan] * 6, [math.nan] * 6)
    assert report.overfitting_onset(all_nan) is None
    # None values (e.g. a metric not computed that epoch) count as NaN.
    hist = u_shaped(10, 4)
    hist[5]["train_accuracy"] = None
    assert report.overfitting_onset(hist) == 7


def test_onset_bad_input():
    hist = u_shaped(8)
    with pytest.raises(ValueError, match="patience"):
        report.overfitting_onset(hist, patience=0)
    with pytest.raises(TypeError, match="patience"):
        report.overfitting_onset(hist, patience=1.5)
    with pytest.raises(ValueError, match="min_delta"):
        report.overfitting_onset(hist, min_delta=-0.1)
    with pytest.raises(TypeError, match="history"):
        report.overfitting_onset({"epoch": 1})
    bad = [dict(r) for r in hist]
    del bad[3]["val_loss"]
    with pytest.raises(ValueError, match="val_loss"):
        report.overfitting_onset(bad)


# --------------------------------------------------------------------------- plot_curves


def check_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return img


def test_plot_curves_writes_png(tmp_path):
    hist = u_shaped(10, 5)
    out = report.plot_curves(
        hist, tmp_path / "sub" / "curves.png", onset=6, best_epoch=5, title="run"
    )
    assert out == tmp_path / "sub" / "curves.png"
    img = check_png(out)
    # Two panels and markers: the image is not blank.
    assert float(np.std(img[..., :3])) > 0.01


def test_plot_curves_markers_in_legend(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = {}
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        saved["fig"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    report.plot_curves(u_shaped(10, 5), tmp_path / "c.png", onset=6, best_epoch=5)
    axes = saved["fig"].axes
    assert len(axes) == 2
    for ax in axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "train" in labels and "validation" in labels
        assert "overfitting onset (epoch 6)" in labels
        assert "best epoch (5)" in labels


def test_plot_curves_partial_series_and_bad_input(tmp_path):
    hist = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.1 * e} for e in range(1, 5)]
    check_png(report.plot_curves(hist, tmp_path / "train_only.png"))
    with pytest.raises(ValueError, match="empty"):
        report.plot_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="val_loss"):
        report.plot_curves([{"epoch": 1, "val_accuracy": 1.0}], tmp_path / "x.png")
    # Without accuracy (e.g. reconstruction) the second panel shows another metric, or none.
    check_png(report.plot_curves([{"epoch": 1, "val_loss": 1.0}], tmp_path / "loss_only.png"))
    check_png(
        report.plot_curves([{"epoch": 1, "val_loss": 1.0, "val_psnr": 20.0}], tmp_path / "psnr.png")
    )
    with pytest.raises(ValueError, match="epoch"):
        report.plot_curves([{"val_loss": 1.0, "val_accuracy": 0.5}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="onset"):
        report.plot_curves(u_shaped(5), tmp_path / "x.png", onset=9)
    with pytest.raises(TypeError, match="best_epoch"):
        report.plot_curves(u_shaped(5), tmp_path / "x.png", best_epoch=2.5)
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- formatting


def test_markdown_table_formatting():
    rows = [
        {"method": "baseline", "acc": 0.91234567, "epochs": 10, "note": "a|b"},
        {"method": "mixup", "acc": np.float32(0.5), "lr": 3e-5, "epochs": np.int64(12)},
    ]
    md = report.markdown_table(rows)
    lines = md.strip().split("\n")
    assert lines[0] == "| method | acc | epochs | note | lr |"
    assert lines[1] == "| --- | ---: | ---: | --- | ---: |"
    assert lines[2] == "| baseline | 0.9123 | 10 | a\\|b |  |"
    assert lines[3] == "| mixup | 0.5000 | 12 |  | 3e-05 |"  # 3e-05 would be 0.0000 with .4f
    assert md.endswith("\n")
    md = report.markdown_table(rows, columns=["acc", "method"], floatfmt=".2f")
    assert md.split("\n")[2] == "| 0.91 | baseline |"
    assert report.markdown_table([], columns=["a", "b"]).strip().split("\n") == [
        "| a | b |",
        "| --- | --- |",
    ]
    with pytest.raises(ValueError, match="rows"):
        report.markdown_table([])
    with pytest.raises(TypeError, match="rows"):
        report.markdown_table({"a": 1})


def test_format_value():
    assert report.format_value(None) == ""
    assert report.format_value(True) == "True"
    assert report.format_value(7) == "7"
    assert report.format_value(0.0) == "0.0000"
    assert report.format_value(1234.56789) == "1234.5679"
    assert report.format_value(2.5e7) == "2.5e+07"
    assert report.format_value(3.456e-4) == "0.000346"  # small values keep 3 significant digits
    assert report.format_value(-2e-9) == "-2e-09"
    assert report.format_value(float("nan")) == "nan"
    assert report.format_value(-float("inf")) == "-inf"
    assert report.format_value([1, 2]) == "[1,2]"
    assert report.format_value(0.123, ".1%") == "12.3%"


def test_mean_std():
    assert report.mean_std([0.908, 0.912, 0.916]) == "0.912 ± 0.004"
    assert report.mean_std(np.array([1.0, 3.0]), fmt=".1f", ddof=0) == "2.0 ± 1.0"
    assert report.mean_std([0.9]) == "0.900"
    assert report.mean_std([0.9, float("nan")]) == "nan ± nan"
    with pytest.raises(ValueError, match="values"):
        report.mean_std([])
    with pytest.raises(TypeError, match="values"):
        report.mean_std(0.5)


# --------------------------------------------------------------------------- run report


def test_write_run_report_with_onset(tmp_path):
    hist = u_shaped(10, 5)
    config = {"model": "tiny_cnn", "optimizer": {"name": "sgd", "lr": 0.1}, "seed": 0}
    results = {
        "test_accuracy": 0.9123456,
        "val_loss": 0.5,
        "best_epoch": 5,
        "stopped_epoch": 10,
        "wall_time_s": 12.3456,
        "val_ece": np.float32(0.031),
    }
    path = report.write_run_report(
        tmp_path / "run",
        title="Tiny CNN on digits",
        config=config,
        history=hist,
        results=results,
        notes=["smoke run"],
    )
    assert path == tmp_path / "run" / "report.md"
    md = path.read_text()
    assert md.startswith("# Tiny CNN on digits\n")
    assert "| metric | value |" in md
    assert "| test_accuracy | 0.9123 |" in md
    assert "| best_epoch | 5 |" in md
    assert "| val_ece | 0.0310 |" in md
    assert "Validation loss started rising at epoch 6 while training accuracy kept rising" in md
    assert "![Loss and accuracy per epoch](curves.png)" in md
    assert "- smoke run" in md
    assert "<details><summary>Config</summary>" in md
    block = re.search(r"```json\n(.*?)\n```", md, re.S).group(1)
    assert json.loads(block) == config
    check_png(tmp_path / "run" / "curves.png")


def test_write_run_report_without_onset(tmp_path):
    hist = make_history(np.linspace(2.0, 0.2, 7), np.linspace(0.3, 0.95, 7))
    path = report.write_run_report(
        tmp_path, title="t", config={}, history=hist, results={"best_epoch": 7}
    )
    md = path.read_text()
    assert "No overfitting onset detected in 7 epochs." in md
    assert "curves.png" in md and (tmp_path / "curves.png").exists()


def test_write_run_report_empty_history_and_bad_input(tmp_path):
    path = report.write_run_report(tmp_path, title="t", config={"a": 1}, history=[], results={})
    md = path.read_text()
    assert "No overfitting onset detected in 0 epochs." in md
    assert not (tmp_path / "curves.png").exists()
    with pytest.raises(TypeError, match="config"):
        report.write_run_report(tmp_path, title="t", config=[1], history=[], results={})
    with pytest.raises(TypeError, match="results"):
        report.write_run_report(tmp_path, title="t", config={}, history=[], results=[])
    with pytest.raises(TypeError, match="notes"):
        report.write_run_report(
            tmp_path, title="t", config={}, history=[], results={}, notes="one string"
        )


# --------------------------------------------------------------------------- experiment report + index


def save_png(path, color):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot().imshow(np.full((4, 4, 3), color, dtype=float))
    fig.savefig(path)


def make_experiment(workdir, title, rows=None):
    workdir.mkdir(parents=True)
    save_png(workdir / "acc.png", 0.2)
    return report.write_experiment_report(
        workdir,
        title=title,
        question="Does mixup help <small> data?",
        expectation="Yes & by > 1 point",
        table_rows=rows
        or [
            {"method": "baseline", "accuracy": report.mean_std([0.90, 0.91, 0.92])},
            {"method": "mixup", "accuracy": report.mean_std([0.93, 0.93, 0.94]), "n": 3},
        ],
        verdict="Confirmed: +2 points.",
        figures=["acc.png"],
        extra_md="## Extra\n\nmore",
    )


def test_write_experiment_report(tmp_path):
    path = make_experiment(tmp_path / "mixup", "Mixup on digits")
    md = path.read_text()
    assert md.startswith("# Mixup on digits")
    for text in (
        "Does mixup help <small> data?",
        "| method | accuracy | n |",
        "| baseline | 0.910 ± 0.010 |  |",
        "Confirmed: +2 points.",
        "![acc.png](acc.png)",
        "## Extra",
    ):
        assert text in md
    summary = json.loads((tmp_path / "mixup" / "summary.json").read_text())
    assert set(summary) >= {"title", "question", "expectation", "verdict", "table_rows", "figures"}
    assert summary["figures"] == ["acc.png"]
    assert summary["table_rows"][1]["n"] == 3


def test_write_experiment_report_bad_figures(tmp_path):
    kw = {"title": "t", "question": "q", "expectation": "e", "table_rows": [], "verdict": "v"}
    with pytest.raises(ValueError, match="figures"):
        report.write_experiment_report(tmp_path, figures=["missing.png"], **kw)
    outside = tmp_path / "elsewhere.png"
    save_png(outside, 0.5)
    with pytest.raises(ValueError, match="figures"):
        report.write_experiment_report(tmp_path / "run", figures=[str(outside)], **kw)
    with pytest.raises(TypeError, match="figures"):
        report.write_experiment_report(tmp_path, figures="a.png", **kw)
    with pytest.raises(TypeError, match="verdict"):
        report.write_experiment_report(tmp_path, figures=[], **{**kw, "verdict": None})


def test_html_index_embeds_images_and_escapes(tmp_path):
    root = tmp_path / "runs"
    make_experiment(root / "b_mixup", "Mixup <b>bold</b> & co")
    make_experiment(root / "a_cutout", "Cutout")
    (root / "broken").mkdir()
    (root / "broken" / "summary.json").write_text("{not json")
    (root / "no_summary").mkdir()
    out = report.html_index(root, tmp_path / "site" / "index.html")
    assert out == tmp_path / "site" / "index.html"
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Mixup &lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert "<b>bold</b>" not in page
    assert "Does mixup help &lt;small&gt; data?" in page
    assert "Yes &amp; by &gt; 1 point" in page
    assert "0.910 ± 0.010" in page and "<th>method</th>" in page
    assert page.index("Cutout") < page.index("Mixup &lt;b&gt;")  # sorted by folder
    assert "Could not read summary.json" in page
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 2
    assert base64.b64decode(uris[0])[:8] == PNG_SIGNATURE
    assert 'src="acc.png"' not in page and "http" not in page.replace("<!DOCTYPE html>", "")


def test_html_index_missing_figure_and_empty_root(tmp_path):
    root = tmp_path / "runs"
    make_experiment(root / "exp", "E")
    (root / "exp" / "acc.png").unlink()
    page = report.html_index(root, tmp_path / "index.html").read_text()
    assert "Missing figure: acc.png" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        "No experiments or runs found" in report.html_index(empty, tmp_path / "e.html").read_text()
    )
    with pytest.raises(ValueError, match="root"):
        report.html_index(tmp_path / "nope", tmp_path / "x.html")


def test_write_run_report_accepts_configdict(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    config = ml_collections.ConfigDict({"model": "cnn", "optimizer": {"lr": 0.1}, "shape": (8, 8)})
    md = report.write_run_report(
        tmp_path, title="t", config=config, history=u_shaped(6, 3), results={"best_epoch": 3}
    ).read_text()
    block = re.search(r"```json\n(.*?)\n```", md, re.S).group(1)
    assert json.loads(block) == {"model": "cnn", "optimizer": {"lr": 0.1}, "shape": [8, 8]}


def test_html_index_takes_any_folder_includes_single_runs_and_marks_smoke(tmp_path):
    # An experiment (smoke), its own sub-run (summarised by it, not listed), and a single run.
    exp = tmp_path / "runs" / "exp"
    report.write_experiment_report(
        exp,
        title="Exp",
        question="q?",
        expectation="e",
        table_rows=[{"variant": "a", "test_accuracy": 0.5}],
        verdict="a wins",
        figures=[],
        smoke=True,
    )
    (exp / "a" / "seed0").mkdir(parents=True)
    (exp / "a" / "seed0" / "results.json").write_text('{"test_accuracy": 0.5}')
    run = tmp_path / "runs" / "single"
    run.mkdir()
    (run / "results.json").write_text('{"test_accuracy": 0.75, "best_epoch": 3}')
    (run / "config.json").write_text('{"data": "digits", "model": "tiny", "smoke": false}')
    md = (exp / "report.md").read_text()
    assert "[smoke] a wins" in md and "Smoke run" in md
    assert json.loads((exp / "summary.json").read_text())["smoke"] is True
    page = report.html_index(tmp_path / "runs", tmp_path / "i.html").read_text()
    assert "1 experiment(s), 1 single run(s)" in page
    assert "[smoke] Exp" in page and "run single (digits, tiny)" in page and "0.75" in page
    assert "seed0" not in page
    # One run's folder, or one experiment's folder, is a root too.
    assert "run single" in report.html_index(run, tmp_path / "r.html").read_text()
    assert "[smoke] Exp" in report.html_index(exp, tmp_path / "e.html").read_text()
