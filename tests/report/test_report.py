"""The HTML reports: figures that answer a question each, legends that carry the right AUCs, pages that fit a
1,280 px window. The page-width check reads the markup, so it needs no browser; with Chromium installed, the tiny
run's page is also laid out and screenshotted for real."""

import base64
import re
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

import modelyard
from modelyard.metrics import classification_report
from modelyard.report import plots
from modelyard.report.html import headline_html, interval_method, write_report
from modelyard.report.lm import write_lm_report
from modelyard.report.page import MAX_FIGURE_PX, WINDOW_PX, figures_row, plt, png_bytes, png_size
from modelyard.report.render import find_browser, layout_problems
from modelyard.report.render import main as render_main
from modelyard.value.report import write_value_report
from tests.conftest import tiny_config


def predictions(n_classes: int, n: int = 240, seed: int = 0, skill: float = 2.0):
    """Probabilities from noisy logits with the true class boosted: a decent but imperfect model."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += skill
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


def history(epochs: int, best: int) -> list[dict]:
    rows = [{"epoch": e, "train_loss": 2 / e, "val_loss": 1 / e + 0.01 * abs(e - best),
             "train_accuracy": 1 - 1 / (e + 1), "val_accuracy": 0.9 - 0.001 * abs(e - best)}
            for e in range(1, epochs + 1)]
    return rows[:5] + [dict(rows[4], val_loss=9.0)] + rows[5:]  # epoch 5 written twice (a resume): the last wins


def fake_run(tmp_path, n_classes: int, *, texts: bool = False, headline: dict | None = None,
             extra: dict | None = None):
    """write_report's inputs for a synthetic run: no training, so the test takes a second. `extra` adds to (or
    replaces) metrics.json's fields, e.g. a derived run's lineage."""
    y, prob = predictions(n_classes)
    labels = [f"class-{i}" for i in range(n_classes)]
    test = classification_report(y, prob, labels)
    test["headline"] = headline or {"metric": "accuracy", "value": test["accuracy"], "low": 0.8, "high": 0.9,
                                    "level": 0.95, "resamples": 50}
    metrics = {"val": classification_report(y, prob, labels), "test": test, "monitor": "val_loss", "best_epoch": 17,
               "best_value": 1 / 17, "epochs": 40, "steps": 400, "train_time_s": 3.0, "processes": 1,
               "stopped_early": False, "parameters": 1000, "trainable_parameters": 1000, **(extra or {})}
    path = tmp_path / "tiny-20260101T000000Z"
    path.mkdir()
    run = SimpleNamespace(path=path, plots_dir=path / "plots", report_path=path / "report.html")
    words = ["word " * 5 + "x" * 600 if i % 3 else "short text" for i in range(len(y))]  # one unbreakable token
    rows = [] if (extra or {}).get("epochs") == 0 else history(40, best=17)
    write_report(run, modelyard.load_config(tiny_config()), metrics, rows, (y, prob, None), labels,
                 texts=words if texts else None)
    return run, y, prob, metrics


def legend(fig, axis: int = 0) -> list[str]:
    texts = [t.get_text() for t in fig.axes[axis].get_legend().get_texts()]
    plt.close(fig)
    return texts


def number(label: str) -> float:
    return float(re.search(r"= ([0-9.]+)\)", label).group(1))


def test_report_fits_the_window_and_titles_every_figure(tmp_path):
    run, *_ = fake_run(tmp_path, 12, texts=True)
    page = run.report_path.read_text()
    assert layout_problems(page) == []
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert len(alts) == 6 == len(list(run.plots_dir.glob("*.png")))
    assert all("?" in a and a.endswith(")") for a in alts), alts  # "Which classes does it confuse? (...)"
    for png in run.plots_dir.glob("*.png"):
        assert png_size(png.read_bytes())[0] <= MAX_FIGURE_PX, png.name
    assert "Kept the weights of epoch 17, the best val_loss" in page
    assert len(re.findall(r"<tr><td>class-\d+</td><td>[0-9.]+</td>", page)) == 12  # the per-class table
    assert "ROC AUC" in page and "Most confused classes" in page


def lineage(method: str, *, epochs: int, tmp_path) -> dict:
    """metrics.json's fields of a derived run whose parent sits beside it."""
    return {"method": method, "params": {"temperature": 2.0}, "parent": str(tmp_path / "tiny-20251231T000000Z"),
            "parent_figures": {"test": {"accuracy": 0.5, "f1_macro": 0.5, "log_loss": 1.0, "ece": 0.1},
                               "parameters": 4000, "bytes_on_disk": 4 * 2**20},
            "bytes_on_disk": 2**20, "compress_time_s": 1.5, "notes": ["a note <on> the method"],
            "speed": {"parent": {"latency_ms_batch1": 2.0, "throughput_batch32": 1000.0},
                      "this": {"latency_ms_batch1": 1.0, "throughput_batch32": 2500.0},
                      "ratio": {"latency_batch1": 2.0, "throughput_batch32": 2.5},
                      "machine": {"cpu": "test CPU", "cores": 2, "torch": "2.x", "torch_threads": 2, "gpu": None},
                      "iterations": 5},
            "epochs": epochs, "monitor": None if epochs == 0 else "val_loss"}


def test_a_derived_run_that_did_not_train_says_so_and_shows_its_parent(tmp_path):
    run, y, prob, metrics = fake_run(tmp_path, 3, extra=lineage("int8-dynamic", epochs=0, tmp_path=tmp_path))
    page = run.report_path.read_text()
    assert layout_problems(page) == [] and "<h1>tiny &middot; int8-dynamic</h1>" in page
    assert "Not trained: made from its parent by int8-dynamic in 1.5 s, so there are no learning curves." in page
    assert "scikit-learn" not in page and "Learning curves" not in page and "Kept the weights" not in page
    assert 'Made from <a href="../tiny-20251231T000000Z/report.html">tiny-20251231T000000Z</a>' in page
    assert "(parameters: temperature=2.0)" in page and "a note &lt;on&gt; the method" in page
    accuracy = metrics["test"]["accuracy"]
    assert (f"<td>test accuracy</td><td>0.5000</td><td>{accuracy:.4f}</td><td>{100 * (accuracy - 0.5):+.2f} points"
            "</td>") in page
    assert "<td>size on disk</td><td>4.0 MiB</td><td>1.0 MiB</td><td>4x smaller</td>" in page
    assert "<td>parameters</td><td>4,000</td><td>1,000</td><td>4x fewer</td>" in page
    assert "<td>latency, batch 1 (ms, median)</td><td>2</td><td>1</td><td>2x faster</td>" in page
    assert "<td>throughput, batch 32 (examples/s)</td><td>1,000</td><td>2,500</td><td>2.5x faster</td>" in page
    assert "(5 timed calls each), on test CPU, 2 cores" in page and "Configuration (the parent's)" in page


def test_a_derived_run_that_trained_keeps_its_learning_curves_beside_its_lineage(tmp_path):
    run, *_ = fake_run(tmp_path, 3, extra=lineage("distill", epochs=40, tmp_path=tmp_path))
    page = run.report_path.read_text()
    assert "Trained 40 epochs" in page and "Learning curves" in page and "Not trained" not in page
    assert "Where does this model come from?" in page and "by <b>distill</b>" in page


def test_an_estimator_still_says_it_was_fitted_in_one_call(tmp_path):
    run, *_ = fake_run(tmp_path, 3, extra={"monitor": None, "epochs": 1, "train_time_s": 2.0})
    assert "Fitted in 2.0 s (no epochs: a scikit-learn estimator)." in run.report_path.read_text()


def test_headline_names_its_interval_method():
    headline = {"metric": "accuracy", "value": 0.9, "low": 0.8, "high": 0.95, "level": 0.95, "interval": "wilson"}
    assert headline_html(headline) == "Test accuracy: <b>0.9000</b> (95% CI 0.8000 to 0.9500, Wilson score interval)"
    assert headline_html(headline | {"low": None, "high": None}) == "Test accuracy: <b>0.9000</b>"


@pytest.mark.parametrize("headline, words", [
    ({"resamples": 200}, "percentile bootstrap, 200 resamples of the test set"),  # before intervals were named
    ({"interval": "bootstrap", "resamples": 50}, "percentile bootstrap, 50 resamples of the test set"),
    ({"interval": "clopper_pearson"}, "exact binomial (Clopper-Pearson) interval"),
    ({"interval": {"method": "Wilson"}}, "Wilson score interval"),
    ({"interval": "bca"}, "bca"),
])
def test_interval_method_in_words(headline, words):
    assert interval_method(headline) == words


@pytest.mark.parametrize("n_classes", [2, 3])
def test_few_classes_get_a_curve_each_with_its_auc(n_classes):
    y, prob = predictions(n_classes)
    classes = [1] if n_classes == 2 else range(n_classes)
    roc = legend(plots.roc_curves(y, prob, [f"c{i}" for i in range(n_classes)]))
    pr = legend(plots.pr_curves(y, prob, [f"c{i}" for i in range(n_classes)]))
    assert [r.split(" ")[0] for r in roc[:-1]] == [f"c{c}" for c in classes] and roc[-1].startswith("chance")
    for c, r, p in zip(classes, roc, pr):
        assert number(r) == pytest.approx(roc_auc_score(y == c, prob[:, c]), abs=5e-5)
        assert number(p) == pytest.approx(average_precision_score(y == c, prob[:, c]), abs=5e-5)


def test_many_classes_get_micro_and_macro_curves_whose_aucs_match_the_metrics():
    y, prob = predictions(10)
    labels = [str(i) for i in range(10)]
    m = classification_report(y, prob, labels)
    roc = legend(plots.roc_curves(y, prob, labels))
    assert roc[0] == "each of 10 classes (table below)" and len(roc) == 4
    assert roc[1].startswith("micro-average") and roc[2].startswith("macro-average")
    onehot = np.eye(10)[y]
    assert number(roc[1]) == pytest.approx(roc_auc_score(onehot, prob, average="micro"), abs=5e-5)
    assert number(roc[2]) == pytest.approx(m["roc_auc_ovr_macro"], abs=5e-5)
    pr = legend(plots.pr_curves(y, prob, labels))
    assert number(pr[0].replace("AP = ", "= ") + ")") == pytest.approx(m["pr_auc_macro"], abs=5e-5)
    assert number(pr[1]) == pytest.approx(average_precision_score(onehot, prob, average="micro"), abs=5e-5)


def test_the_macro_average_roc_curve_has_exactly_the_mean_area():
    y, prob = predictions(7, n=140, seed=3, skill=1.5)
    prob = np.round(prob, 2)  # tied scores: diagonal steps as well as vertical ones
    curves = [roc_curve(y == c, prob[:, c])[:2] for c in range(7)]
    fpr, tpr = plots.macro_average_roc(curves)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= -1e-12)  # a curve, not a scribble
    mean_auc = np.mean([roc_auc_score(y == c, prob[:, c]) for c in range(7)])
    assert auc(fpr, tpr) == pytest.approx(mean_auc, abs=1e-12)


def test_a_class_absent_from_the_test_split_has_no_curve_and_no_auc(tmp_path):
    y, prob = predictions(4)
    y = np.where(y == 3, 0, y)
    labels = ["a", "b", "c", "d"]
    assert plots.per_class_auc(y, prob, labels)["d"] == {"roc_auc": None, "average_precision": None}
    assert plots.per_class_auc(y, prob, labels)["a"]["roc_auc"] == pytest.approx(roc_auc_score(y == 0, prob[:, 0]))
    assert [r.split(" ")[0] for r in legend(plots.roc_curves(y, prob, labels))] == ["a", "b", "c", "chance"]


def test_learning_curves_mark_each_epoch_and_star_the_kept_one():
    fig = plots.learning_curves(history(40, best=17), best_epoch=17, monitor="val_loss")
    loss = fig.axes[0]
    train, val, kept_line, star = loss.get_lines()
    assert list(kept_line.get_xdata()) == [17, 17]  # the dashed vertical line
    assert list(train.get_xdata()) == list(range(1, 41)) and train.get_marker() == "o"
    assert val.get_ydata()[4] == 9.0  # the rewritten epoch 5 is the one drawn
    assert (star.get_marker(), list(star.get_xdata()), list(star.get_ydata())) == ("*", [17], [1 / 17])
    assert "kept: epoch 17, best val_loss" in legend(fig)
    assert fig.get_figwidth() * 100 <= MAX_FIGURE_PX


def test_language_model_curves_say_what_their_accuracy_is():
    rows = [{"epoch": e, "train_loss": 3 / e, "val_loss": 3.5 / e, "val_accuracy": 0.1 * e, "val_perplexity": 9.0}
            for e in (1, 2, 3)]
    fig = plots.learning_curves(rows, best_epoch=3, monitor="val_loss")
    assert fig.axes[1].get_ylabel() == "next-token accuracy" and fig.axes[0].get_ylabel() == "loss (nats/token)"
    plt.close(fig)


def test_reliability_diagram_counts_every_example_even_when_all_are_right():
    y = np.arange(50) % 5
    prob = np.full((50, 5), 0.01)
    prob[np.arange(50), y] = 0.96
    fig = plots.reliability_diagram(y, prob, bins=10)
    assert sum(p.get_height() for p in fig.axes[1].patches) == 50
    assert fig.axes[0].get_title().startswith("Is the model's confidence trustworthy?")
    plt.close(fig)


def test_png_bytes_and_the_layout_check_refuse_what_would_overflow():
    with pytest.raises(ValueError, match="at most 1060 px"):
        png_bytes(plt.figure(figsize=(14, 3)))
    wide = plt.figure(figsize=(14, 2))
    import io

    buf = io.BytesIO()
    wide.savefig(buf, format="png", dpi=100)
    plt.close(wide)
    page = (f'<style>body{{max-width:900px}}</style><img alt="x" src="data:image/png;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}"><table><tr><td>1</td></tr></table>')
    problems = layout_problems(page)
    assert any("img a max-width" in p for p in problems) and any("1400 px wide" in p for p in problems)
    assert any("1 table(s) outside" in p for p in problems) and len(problems) == 3


def test_a_figure_too_wide_for_half_the_page_gets_a_row_of_its_own():
    narrow, wide = (png_bytes(plt.figure(figsize=(w, 2))) for w in (5.2, 8.0))
    assert figures_row((narrow, "a?", ""), (narrow, "b?", "")).startswith('<div class="grid">')
    row = figures_row((wide, "a?", ""), (narrow, "b?", ""))
    assert "grid" not in row and row.count("<figure>") == 2
    assert figures_row((None, "missing", ""), (narrow, "b?", "")).count("<figure>") == 1


def test_language_model_page_fits_the_window(tmp_path):
    run = SimpleNamespace(path=tmp_path, plots_dir=tmp_path / "plots", report_path=tmp_path / "report.html")
    metrics = {"val": {"perplexity": 20.0, "unigram_perplexity": 200.0, "tokens": 5000, "loss": 3.0,
                       "token_accuracy": 0.3},
               "samples": [{"prompt": "the", "completion": "x" * 3000}], "epochs": 3, "steps": 30,
               "train_time_s": 1.0, "processes": 1, "parameters": 10, "trainable_parameters": 10,
               "best_epoch": 2, "monitor": "val_loss"}
    rows = [{"epoch": e, "train_loss": 4 / e, "val_loss": 3.5 / e, "val_accuracy": 0.1 * e, "val_perplexity": 9.0}
            for e in (1, 2, 3)]
    write_lm_report(run, modelyard.load_config(tiny_config()), metrics, rows)
    page = run.report_path.read_text()
    assert layout_problems(page) == [] and "<td class='text'>xxx" in page  # the long sample wraps in its cell
    assert re.findall(r'<img alt="([^"]+)"', page) == [plots.title("learning_curves")]


def value_result(n_candidates: int = 3) -> dict:
    """What `compare` returns, by hand: the fields value.html reads."""
    def candidate(i):
        return {"name": f"candidate-{i}", "kind": "model", "accuracy": 0.9 + 0.01 * i, "f1_macro": 0.89 + 0.01 * i,
                "p50_ms": 1.0 + i, "p95_ms": 2.0 + 3 * i, "p99_ms": 3.0 + 3 * i,
                "predictions_per_second": 1000 / (i + 1),
                "parameters": 10 ** (3 + i), "bytes_on_disk": 2**20 * (i + 1), "flops_per_example": 1e6 * (i + 1),
                "value_per_prediction": {"value": 0.001 * i, "low": 0.0005 * i, "high": 0.0015 * i},
                "cost_per_1000": 0.01 * (i + 1), "monthly_net": 1000.0 * i - 50, "horizon_total": 12000.0 * i - 900,
                "roi": 1.5 * i, "payback_month": i + 1, "break_even_volume": 50000.0 * (i + 1),
                "break_even_accuracy": 0.8, "meets_slo": i < 2, "dominated_value_cost": i == 0,
                "dominated_accuracy_latency": False, "one_off": {"total": 500.0},
                "decision_rules": {"chosen": "argmax", "rules": {"argmax": {"test": 0.001},
                                                                 "value_optimal": {"test": 0.0011}}}}
    cands = [candidate(i) for i in range(n_candidates)]
    for c in cands:
        c["lineage"], c["one_off_basis"] = None, "its training"
        c["monthly_net_interval"] = {"low": c["monthly_net"] - 100, "high": c["monthly_net"] + 100}
    cands[-1]["lineage"] = {"parent": "/runs/candidate-0-20260101T000000Z", "method": "onnx-int8", "params": {},
                            "parent_name": "candidate-0-20260101T000000Z"}
    cands[-1]["one_off_basis"] = "training candidate-0 (train_time_s, 5.0 s) + onnx-int8 (compress_time_s, 2.0 s)"
    return {"scenario": {"currency": "USD", "volume_per_month": 1e6, "horizon_months": 12, "latency_slo_ms": 6.0,
                         "serve": {"usd_per_hour": 0.05}},
            "candidates": cands, "recommended": "candidate-1",
            "ranking": ["candidate-1", "candidate-0", "do nothing", *[c["name"] for c in cands[2:]]],
            "do_nothing": {"name": "do nothing", "kind": "baseline", "value_per_prediction": {"value": 0.0},
                           "cost_per_1000": 0.0, "monthly_net": 0.0, "horizon_total": 0.0, "roi": None,
                           "payback_month": None, "break_even_volume": None, "meets_slo": True},
            "recommendation": "candidate-1 earns 1,000 USD/month more than doing nothing.",
            "sensitivity": {"candidate": "candidate-1", "base": 11100.0,
                            "factors": {"volume": {"low": 5000.0, "high": 17000.0},
                                        "outcome_values": {"low": -1000.0, "high": 23000.0},
                                        "hardware_price": {"low": 11500.0, "high": 10700.0}}},
            "machine": {"cpu": "test CPU", "cores": 2, "torch": "2.x", "torch_threads": 2, "gpu": None}}


def test_value_page_fits_the_window_with_narrow_tables_and_titled_charts(tmp_path):
    write_value_report(tmp_path / "value.html", value_result())
    page = (tmp_path / "value.html").read_text()
    assert layout_problems(page) == []
    for header in re.findall(r"<table><tr>(.*?)</tr>", page):
        assert header.count("<th>") <= 9, header  # was one table of 15 columns
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert len(alts) == 3 and all("?" in a for a in alts)
    assert "<b>candidate-1</b><br><small>recommended</small>" in page
    assert "candidate-2<br><small>breaks the SLO</small>" in page
    ranked = re.findall(r"<tr><td>(\d)</td><td class=.text.>(?:<b>)?([a-z0-9 -]+)", page)
    assert ranked == [("1", "candidate-1"), ("2", "candidate-0"), ("3", "do nothing"), ("4", "candidate-2")]
    assert "candidate-2<br><small>onnx-int8 of candidate-0-20260101T000000Z; breaks the latency SLO</small>" in page
    assert "950<br><small>[850, 1,050]</small>" in page  # candidate-1's net per month and its interval
    # how the derived run's one-off was counted
    assert "candidate-2: training candidate-0 (train_time_s, 5.0 s) + onnx-int8 (compress_time_s, 2.0 s)." in page


def test_the_tiny_runs_page_fits_1280px(digits_run, tmp_path):
    """The markup check always runs; where Chromium is installed the page is also laid out and screenshotted."""
    report = digits_run.path / "report.html"
    assert layout_problems(report.read_text()) == []
    if find_browser() is not None:  # what `make report-png` runs; exit 1 would mean wider than the window
        assert render_main([str(digits_run.path), "--out", str(tmp_path)]) == 0
        assert png_size((tmp_path / "tiny-report.png").read_bytes())[0] == WINDOW_PX


def test_modelyard_report_quotes_test_texts_again_and_keeps_an_estimators_sentence(topics_csv, tmp_path, capsys):
    """A text run's page is written anew with the test texts read back from its data; without the data it is
    written anyway, and the command says what the page lacks."""
    import shutil

    from tests.conftest import cli_in_process

    cfg = tiny_config(name="tfidf", data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear", "ngram_max": 1, "max_features": 200}
    run = modelyard.train(cfg, output=tmp_path / "runs", quiet=True)
    before = (run.path / "report.html").read_text()
    (run.path / "report.html").unlink()
    code, out, err = cli_in_process(capsys, "report", run.path)
    after = (run.path / "report.html").read_text()
    assert code == 0 and out.strip() == str(run.path / "report.html") and "note:" not in err
    quoted = re.findall(r"<td class='text'>.*?</td>", before)
    assert quoted and re.findall(r"<td class='text'>.*?</td>", after) == quoted  # the same texts, read back
    assert "Fitted in" in after and "a scikit-learn estimator" in after
    copy = tmp_path / "moved" / run.path.name
    shutil.copytree(run.path, copy)
    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace(str(topics_csv), "/gone/t.csv"))
    code, _, err = cli_in_process(capsys, "report", copy)
    assert code == 0 and "note: no example texts in the confused-pairs table" in err and "/gone/t.csv" in err
    assert "<td class='text'>" not in (copy / "report.html").read_text()
