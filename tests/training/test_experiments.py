import csv
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import ViTConfig, build_model
from model.checkpoint import load_checkpoint
from model.config import ConfigError
from tests.conftest import MNIST_SLICE
from training.cli import main
from training.config import TrainConfig
from training.costs import attention_cost, flops_per_image, interleaved_speeds, pretrained_route_cost, vit_flops
from training.data import Split, to_input
from training.engine import fit_input, input_shape, predict
from training.reports import compare, markdown, summarise, update_doc
from training.runs import (
    RESULTS_DIR,
    budget_tag,
    recorded_config,
    run_key,
    scoring_set,
    shuffle_patches,
    shuffled_accuracy,
)
from training.stats import MIN_SEEDS, mcnemar
from training.suites import BASE, SUITES, run_name, variant_config
from training.train import param_groups


def _suite_args(tmp_path, suite, *extra):
    return [
        "experiments",
        suite,
        "--quick",
        "--limit",
        "300",
        "--data-dir",
        str(MNIST_SLICE),
        "--out-dir",
        str(tmp_path / "exp"),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.slow
def test_suite_runs_every_variant_per_seed_compares_them_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = _suite_args(tmp_path, "posenc", "--seeds", "0", "1", "--no-costs")
    assert main(args) == 0
    out = next((tmp_path / "exp").glob("posenc-*"))
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["rows"]] == ["learned", "sincos2d", "none"]
    for row in results["rows"]:
        assert row["seeds"] == [0, 1]
        assert row["test_loss"]["mean"] > 0 and row["val_loss"]["mean"] > 0
        assert "shuffled_patch_accuracy" in row
    runs = results["runs"]["learned"]
    assert runs[0]["test_accuracy"] != runs[1]["test_accuracy"] or runs[0]["test_loss"] != runs[1]["test_loss"]
    assert runs[0]["train_curve"] and runs[0]["epochs"][0]["val_loss"] > 0
    # the paired tests read the per-image correctness each run kept
    correct = np.load(out / "runs" / "learned-seed0" / "test_correct.npy")
    assert correct.dtype == bool and len(correct) == runs[0]["test_images"]
    first = results["comparisons"][0]
    assert (first["a"], first["b"]) == ("sincos2d", "learned") and [t["seed"] for t in first["tests"]] == [0, 1]
    assert "McNemar" in (out / "results.md").read_text()
    with open(out / "results.csv") as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == ["learned", "sincos2d", "none"]
    for png in ("accuracy.png", "curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    stamp = (out / "runs" / "learned-seed0" / "metrics.jsonl").stat().st_mtime
    assert main(args) == 0  # resumed: finished runs are not trained again
    assert (out / "runs" / "learned-seed0" / "metrics.jsonl").stat().st_mtime == stamp
    # a fresh clone has the runs' records but not their checkpoints (git ignores them): still done
    for checkpoint in out.rglob("*.safetensors"):
        checkpoint.unlink()
    assert main(args) == 0
    assert (out / "runs" / "learned-seed0" / "metrics.jsonl").stat().st_mtime == stamp
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    # a run directory left by another config (an older budget, another variant) is moved aside,
    # not resumed or reused
    learned, sincos = out / "runs" / "learned-seed0", out / "runs" / "sincos2d-seed0"
    (learned / "config.json").write_text((sincos / "config.json").read_text())
    (learned / "result.json").unlink()
    sincos_stamp = (sincos / "metrics.jsonl").stat().st_mtime
    assert main(args) == 0
    assert len(list((out / "runs").glob("learned-seed0.stale-*"))) == 1
    assert json.loads((learned / "config.json").read_text())["model"]["pos_embed"] == "learned"
    assert len((learned / "metrics.jsonl").read_text().splitlines()) == 1  # one epoch, not appended
    assert (sincos / "metrics.jsonl").stat().st_mtime == sincos_stamp
    # a finished run moved aside is not counted as another run of its seed
    shutil.copytree(out / "runs" / "sincos2d-seed1", out / "runs" / "sincos2d-seed1.stale-1")
    assert main(args) == 0
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["sincos2d"]["seeds"] == [0, 1]


def test_quick_trials_stay_out_of_the_tracked_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = ["experiments", "pooling", "--quick", "--limit", "300", "--seeds", "0", "--no-costs"]
    assert main([*quick, "--data-dir", str(MNIST_SLICE), "--device", "cpu"]) == 0
    assert list((tmp_path / "runs" / "experiments").glob("pooling-*/runs/cls-token-seed0/result.json"))
    assert not (tmp_path / RESULTS_DIR).exists()


@pytest.mark.slow
def test_distill_suite_trains_each_seeds_teacher_once_on_the_runs_own_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    variants = ("soft", "hard", "token")
    assert main(_suite_args(tmp_path, "distill", "--seeds", "0", "--variants", *variants, "--no-costs")) == 0
    out = next((tmp_path / "exp").glob("distill-*"))
    teacher = out / "teachers" / "teacher-seed0.safetensors"
    assert [p.name for p in (out / "teachers").glob("*.safetensors")] == [teacher.name]
    record = json.loads(teacher.with_suffix(".json").read_text())
    assert record["seed"] == 0 and 0 < record["val_accuracy"] <= 1
    for variant in variants:
        config = json.loads((out / "runs" / f"{variant}-seed0" / "config.json").read_text())
        assert config["distill"] == variant and Path(config["teacher"]) == teacher
        assert config["model"]["distill_token"] == (variant == "token")
        assert config["limit"] == 300  # the teacher saw these images and no others
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == set(variants)


@pytest.mark.slow
def test_canvas_suite_trains_and_scores_on_digits_placed_on_the_canvas(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_suite_args(tmp_path, "canvas", "--seeds", "0", "--variants", "grid", "--no-costs")) == 0
    out = next((tmp_path / "exp").glob("canvas-*"))
    config = json.loads((out / "runs" / "grid-seed0" / "config.json").read_text())
    assert config["canvas"] == 56 and config["model"]["image_size"] == 56 and config["model"]["attention"] == "grid"
    result = json.loads((out / "runs" / "grid-seed0" / "result.json").read_text())
    test = scoring_set(MNIST_SLICE, 300, canvas=56)
    assert result["test_images"] == len(test) and test.images.shape[1:] == (56, 56)


def test_a_suite_can_train_a_subset_of_its_variants(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(_suite_args(tmp_path, "posenc", "--seeds", "0", "--variants", "sincos2d", "--no-costs")) == 0
    out = next((tmp_path / "exp").glob("posenc-*"))
    assert [p.name for p in (out / "runs").iterdir()] == ["sincos2d-seed0"]
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["sincos2d"]["seeds"] == [0]
    with pytest.raises(SystemExit) as exit:
        main(_suite_args(tmp_path, "posenc", "--variants", "sincos", "--no-costs"))
    assert exit.value.code == 2
    assert "suite posenc has no variant sincos; it has learned, sincos2d, none" in capsys.readouterr().err


def test_tables_only_rewrites_the_tables_and_the_documents_block_without_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = _suite_args(tmp_path, "pooling", "--seeds", "0")
    marker = "<!-- table:pooling-epochs1-limit300-valsize300 -->"  # the suite's results folder names its block
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n\n{marker}\n<!-- /table -->\n\nReading.\n")
    # a document without the suite's block stops the suite before it trains anything
    other = tmp_path / "OTHER.md"
    other.write_text("<!-- table:posenc -->\nold\n<!-- /table -->\n")
    with pytest.raises(SystemExit) as exit:
        main([*args, "--no-costs", "--doc", str(other)])
    assert exit.value.code == 2
    assert f"--doc {other} has no '{marker}'" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()
    assert main([*args, "--no-costs"]) == 0
    out = tmp_path / "exp" / "pooling-epochs1-limit300-valsize300"
    stamp = (out / "runs" / "cls-token-seed0" / "metrics.jsonl").stat().st_mtime
    (out / "results.md").unlink()
    no_data = ["--data-dir", str(tmp_path / "no-mnist")]  # tables need the run records, not MNIST
    assert main([*args, "--tables-only", "--doc", str(doc), *no_data]) == 0
    table = (out / "results.md").read_text()
    assert "| cls-token | 1 |" in table and not (out / "costs.json").exists()
    assert (out / "runs" / "cls-token-seed0" / "metrics.jsonl").stat().st_mtime == stamp
    text = doc.read_text()
    assert text == f"# Results\n\n{marker}\n{table.rstrip()}\n<!-- /table -->\n\nReading.\n"
    assert main([*args, "--tables-only", "--doc", str(doc)]) == 0  # rewriting it again changes nothing
    assert doc.read_text() == text
    # a suite without run records (lost, or never run) leaves the document's table alone
    other.write_text("<!-- table:stem-epochs1-limit300-valsize300 -->\nkept\n<!-- /table -->\n")
    with pytest.raises(SystemExit) as exit:
        main([*_suite_args(tmp_path, "stem"), "--tables-only", "--doc", str(other)])
    assert exit.value.code == 2 and "has no run records" in capsys.readouterr().err
    assert "kept" in other.read_text()
    for contradiction in (["--variants", "cls-token"], ["--remeasure"]):
        with pytest.raises(SystemExit) as exit:
            main([*args, "--tables-only", *contradiction])
        assert exit.value.code == 2


def test_update_doc_replaces_exactly_one_well_formed_block(tmp_path):
    doc = tmp_path / "RESULTS.md"
    longer = "<!-- table:a-epochs10 -->\nold\n<!-- /table -->\n"
    doc.write_text("<!-- table:a -->\nold a\n<!-- /table -->\n" + longer)
    update_doc(doc, "a", "| new |\n")
    assert doc.read_text() == "<!-- table:a -->\n| new |\n<!-- /table -->\n" + longer
    # a block without its end marker is an error, not a reason to swallow the next table
    doc.write_text("<!-- table:a -->\nold a\n<!-- table:b -->\nold b\n<!-- /table -->\n")
    with pytest.raises(ConfigError, match="no '<!-- table:a -->'"):
        update_doc(doc, "a", "| new |")
    doc.write_text("<!-- table:a -->\n<!-- /table -->\n<!-- table:a -->\n<!-- /table -->\n")
    with pytest.raises(ConfigError, match="has 2"):
        update_doc(doc, "a", "| new |")


def test_git_keeps_the_runs_records_in_the_default_results_folder_but_not_their_checkpoints():
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    run = RESULTS_DIR / "posenc" / "runs" / "learned-seed0"
    record = [run / n for n in ("config.json", "metrics.jsonl", "result.json", "test_correct.npy")]
    record += [RESULTS_DIR / "posenc" / n for n in ("results.json", "results.md", "costs.json", "accuracy.png")]
    checkpoints = [run / "best.safetensors", run / "last.state.safetensors"]
    paths = [str(p) for p in record + checkpoints]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=root, capture_output=True, text=True).stdout
    assert sorted(ignored.split()) == sorted(str(p) for p in checkpoints)


def test_every_committed_run_record_is_still_its_variants_config():
    """A committed run is its variant's run while its recorded config (fields it predates at their
    defaults) is the variant's config: BASE with the variant's overrides and the budget. A change to
    BASE, or to a TrainConfig default that BASE inherits, would fail here rather than silently make
    the committed records another config's."""
    root = Path(__file__).resolve().parents[2]
    checked = 0
    for name, suite in SUITES.items():
        for budget in (dict(suite.budget), dict(suite.budget) | {"epochs": 10}):
            out = root / RESULTS_DIR / (name + budget_tag(budget, suite.budget))
            base = dataclasses.replace(BASE, run_dir=out / "runs", **budget)
            for variant, overrides in suite.variants.items():
                for seed in range(5):
                    cfg = variant_config(base, variant, overrides, seed)
                    if (cfg.run_path / "result.json").is_file():
                        assert run_key(recorded_config(cfg.run_path)) == run_key(cfg), cfg.run_path
                        checked += 1
    assert checked > 100


@pytest.mark.slow
def test_suite_measures_costs_once_per_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_suite_args(tmp_path, "pooling", "--seeds", "0")) == 0
    out = next((tmp_path / "exp").glob("pooling-*"))
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["cls-token"]["tokens"] == 50 and rows["mean-pool"]["tokens"] == 49
    assert rows["cls-token"]["mflops_per_image"] == round(vit_flops(ViTConfig(stem="linear")) / 1e6, 2)
    for row in rows.values():
        speed = row["train_images_per_s"]
        assert speed["n"] == 5 and speed["min"] <= speed["median"] <= speed["max"]
    assert (out / "train_speed.png").read_bytes()[:4] == b"\x89PNG"
    # the stem suite's linear variant is the pooling suite's class-token run: not trained twice
    assert main(_suite_args(tmp_path, "stem", "--seeds", "0", "--no-costs")) == 0
    stem = next((tmp_path / "exp").glob("stem-*"))
    linear = json.loads((stem / "runs" / "linear-seed0" / "result.json").read_text())
    assert (
        linear["same_as"].endswith("cls-token-seed0")
        and not (stem / "runs" / "linear-seed0" / "best.safetensors").exists()
    )
    assert (stem / "runs" / "conv-seed0" / "best.safetensors").is_file()
    assert (
        linear["test_accuracy"]
        == json.loads((out / "runs" / "cls-token-seed0" / "result.json").read_text())["test_accuracy"]
    )


@pytest.mark.slow
def test_position_suite_reuses_the_base_run_only_where_its_checkpoint_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_suite_args(tmp_path, "pooling", "--seeds", "0", "--no-costs")) == 0
    base = next((tmp_path / "exp").glob("pooling-*")) / "runs" / "cls-token-seed0"
    # an interrupted run of the position suite left its half-trained network behind
    learned = base.parents[2] / base.parents[1].name.replace("pooling", "posenc") / "runs" / "learned-seed0"
    learned.mkdir(parents=True)
    (learned / "best.safetensors").write_bytes(b"half-trained")
    assert main(_suite_args(tmp_path, "posenc", "--seeds", "0", "--no-costs")) == 0
    reused = json.loads((learned / "result.json").read_text())
    # the shuffled-patches score comes from the base run's network, not from training it again
    assert reused["same_as"] == str(base) and not (learned / "best.safetensors").exists()
    assert reused["test_accuracy"] == json.loads((base / "result.json").read_text())["test_accuracy"]
    network = load_checkpoint(base / "best.safetensors").model
    test = scoring_set(MNIST_SLICE, 300)
    assert reused["shuffled_patch_accuracy"] == round(
        shuffled_accuracy(network, test, torch.device("cpu"), BASE.model.patch_size), 5
    )
    # a fresh clone has the base run's record but not its network: the position suite trains its own
    (base / "best.safetensors").unlink()
    shutil.rmtree(learned)
    assert main(_suite_args(tmp_path, "posenc", "--seeds", "0", "--no-costs")) == 0
    trained = json.loads((learned / "result.json").read_text())
    assert "same_as" not in trained and (learned / "best.safetensors").is_file()
    assert "shuffled_patch_accuracy" in trained


@pytest.mark.parametrize("patch", [2, 4, 7])
def test_flops_include_attention_on_both_paths_and_match_the_hand_count(patch):
    config = ViTConfig(patch_size=patch, stem="linear")
    ours = build_model(config)
    expected = vit_flops(config)
    assert flops_per_image(ours) == expected  # fused SDPA path
    assert flops_per_image(ours, ours.forward_with_attention) == expected  # explicit softmax path
    assert flops_per_image(build_model(config.replace(impl="timm"))) == expected


@pytest.mark.parametrize(
    "suite,variant", [(name, v) for name, suite in SUITES.items() for v in suite.variants if name != "tokens"]
)
def test_flops_of_every_suite_variant_match_the_hand_count(suite, variant):
    config = variant_config(BASE, variant, SUITES[suite].variants[variant], 0).model
    assert flops_per_image(build_model(config)) == vit_flops(config)


def test_hand_count_matches_the_figures_a_reviewer_computed():
    # width 64, depth 6, MLP ratio 2, class token: 23.60 MFLOPs at patch 4, 137.2 at patch 2
    assert round(vit_flops(ViTConfig(stem="linear")) / 1e6, 2) == 23.60
    assert round(vit_flops(ViTConfig(patch_size=2, stem="linear")) / 1e6, 1) == 137.2


def test_mcnemar_exact_p_values():
    a = np.array([True] * 10 + [False] * 17)
    b = np.array([False] * 10 + [True] * 17)
    both = np.ones(50, dtype=bool)
    assert mcnemar(both, both) == {"a_only": 0, "b_only": 0, "p": 1.0}
    result = mcnemar(np.zeros(17, dtype=bool), np.ones(17, dtype=bool))
    assert result["p"] == pytest.approx(2 / 2**17)
    # 10 against 17 discordant images: two-sided binomial tail, P(X <= 10 | n=27, 1/2) * 2
    assert mcnemar(a, b)["p"] == pytest.approx(0.2478, abs=1e-4)
    assert mcnemar(b, a)["p"] == mcnemar(a, b)["p"]


def test_comparisons_read_the_interval_and_say_when_records_are_missing(tmp_path):
    rng = np.random.default_rng(0)
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for seed in range(3):
        b = rng.random(2000) < 0.9
        a = b | (rng.random(2000) < 0.5)  # A gets right every image B does, and half of the rest
        for name, correct in (("A", a), ("B", b)):
            (tmp_path / "runs" / run_name(name, seed)).mkdir(parents=True)
            np.save(tmp_path / "runs" / run_name(name, seed) / "test_correct.npy", correct)
            runs[name].append({"seed": seed, "test_accuracy": float(correct.mean())})
    c = compare(tmp_path, "A", "B", runs["A"], runs["B"])
    low, high = c["interval_points"]
    assert 0 < low < c["diff_points"] < high and c["reading"] == "ranked: A > B"
    assert [t["seed"] for t in c["tests"]] == [0, 1, 2]
    table = markdown({"rows": [], "comparisons": [c], "costs": {}})
    assert "95% interval, points (t over seeds, plus test-image noise)" in table
    assert f"| A vs B | {c['diff_points']:+.2f} | {low:+.2f} to {high:+.2f} |" in table
    # one seed: the interval is the test images' alone, and the table says so
    c = compare(tmp_path, "A", "B", runs["A"][:1], runs["B"][:1])
    assert c["interval_points"] is not None and c["reading"] == f"1 of {MIN_SEEDS} seeds run: no reading yet"
    one = markdown({"rows": [], "comparisons": [c], "costs": {}})
    assert f"| A vs B | {c['diff_points']:+.2f} | {c['interval_points'][0]:+.2f} to " in one
    assert "(one seed: test images only, z) |" in one
    # a seed whose per-image records are gone: no interval is made up from the others
    (tmp_path / "runs" / run_name("B", 1) / "test_correct.npy").unlink()
    c = compare(tmp_path, "A", "B", runs["A"], runs["B"])
    assert c["interval_points"] is None and c["reading"] == "no reading: no per-image records at seed 1"
    assert "| cannot be computed: no per-image records |" in markdown({"rows": [], "comparisons": [c], "costs": {}})


def test_tables_round_the_spread_once():
    # timm-3ch's three seeds: sd 0.305 points, which a stored 0.00305 would print as 0.30
    runs = [{"seed": s, "test_accuracy": a, "train_wall_s": 1.0} for s, a in enumerate((0.9553, 0.9569, 0.9510))]
    row = summarise("timm-3ch", runs, {})
    table = markdown({"rows": [row], "comparisons": [], "costs": {}})
    assert "| 95.44 ± 0.31 |" in table


@pytest.mark.slow
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_faster_stem_control_makes_1_channel_training_equal_the_3_channel_model(clip):
    """Replicated RGB under AdamW = the 1-channel model with its stem kernel's step tripled (decay
    divided by 3): the 3-channel kernels, summed over channels, follow the 1-channel kernel.
    Exactly without gradient clipping; with it (the suites clip at norm 1), up to the small share
    the stem kernel has in the global gradient norm, which replication counts sqrt(3) times."""
    torch.manual_seed(0)
    rgb = build_model(ViTConfig(in_chans=3, stem="linear", depth=1))
    grey = build_model(ViTConfig(in_chans=1, stem="linear", depth=1))
    state = rgb.state_dict()
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].sum(1, keepdim=True)
    grey.load_state_dict(state)
    opt_rgb = torch.optim.AdamW(param_groups(rgb, TrainConfig(lr=1e-2)), lr=1e-2)
    opt_grey = torch.optim.AdamW(param_groups(grey, TrainConfig(lr=1e-2, stem_lr_scale=3.0)), lr=1e-2)
    for _ in range(5):
        x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        for model, opt, inp in ((rgb, opt_rgb, x.expand(-1, 3, -1, -1)), (grey, opt_grey, x)):
            opt.zero_grad()
            F.cross_entropy(model(inp), y).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    summed = rgb.patch_embed.proj.weight.sum(1, keepdim=True)
    moved = (grey.patch_embed.proj.weight.detach() - state["patch_embed.proj.weight"]).abs().mean()
    tolerance = 1e-5 if not clip else 0.02 * float(moved)  # within 2% of how far the kernel moved
    torch.testing.assert_close(summed, grey.patch_embed.proj.weight, atol=tolerance, rtol=1e-4)
    # without the control the 1-channel kernel moves a third as far
    plain = build_model(ViTConfig(in_chans=1, stem="linear", depth=1))
    assert len(param_groups(plain, TrainConfig())) == 2


def test_budget_tag_separates_other_budgets():
    assert budget_tag({}, {}) == ""
    assert budget_tag({"epochs": 10}, {}) == "-epochs10"
    assert budget_tag({"epochs": 2, "limit": 12000}, {"epochs": 2, "limit": 12000}) == ""


def test_shuffle_patches_gives_every_image_its_own_order():
    x = torch.arange(28 * 28, dtype=torch.float32).reshape(1, 1, 28, 28).repeat(8, 1, 1, 1)
    y = shuffle_patches(x, 7, torch.Generator().manual_seed(0))
    assert not torch.equal(x, y)
    assert torch.equal(x.flatten(1).sort(dim=1).values, y.flatten(1).sort(dim=1).values)
    assert all(_tiles(x[i]) == _tiles(y[i]) for i in range(8))
    assert len({tuple(y[i].flatten().tolist()) for i in range(8)}) > 1  # not one order for all


def _tiles(t: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(t[0, r : r + 7, c : c + 7].flatten().tolist()) for r in range(0, 28, 7) for c in range(0, 28, 7)}


@pytest.mark.slow
def test_interleaved_speeds_report_median_and_spread():
    models = {"small": build_model(ViTConfig(depth=1, dim=16, heads=2)), "big": build_model(ViTConfig(depth=2))}
    speeds = interleaved_speeds(models, rounds=3, train_steps=1, train_batch=8, infer_batch=8, latency_repeats=2)
    for figures in speeds.values():
        for key in ("train_images_per_s", "latency_ms", "images_per_s"):
            assert figures[key]["n"] == 3 and figures[key]["min"] <= figures[key]["median"] <= figures[key]["max"]


def test_attention_cost_grows_with_tokens():
    rows = attention_cost(tokens=(16, 256), rounds=2, repeats=2)
    assert rows[1]["explicit_ms"]["median"] > rows[0]["explicit_ms"]["median"]


@pytest.mark.slow
def test_every_variant_of_every_suite_builds_and_efficient_variants_cost_less():
    flops = {}
    for name, suite in SUITES.items():
        assert all(a in suite.variants and b in suite.variants for a, b in suite.comparisons), name
        for variant, overrides in suite.variants.items():
            cfg = variant_config(BASE, variant, overrides, seed=1)
            assert cfg.seed == 1 and cfg.name == run_name(variant, 1)
            model = build_model(cfg.model)
            if name == "efficient":
                flops[variant] = flops_per_image(model)
    for tokens in (196, 784):
        assert cfg_tokens(f"full-{tokens}") == tokens
        for kind in ("window", "linear", "kvpool"):
            assert flops[f"{kind}-{tokens}"] < flops[f"full-{tokens}"]
    # the saving grows with the token count: attention's N^2 against the others' N
    assert flops["window-784"] / flops["full-784"] < flops["window-196"] / flops["full-196"]


def cfg_tokens(variant):
    config = variant_config(BASE, variant, SUITES["efficient"].variants[variant], 0).model
    return config.num_patches + config.num_prefix_tokens


def test_a_model_for_larger_images_is_fed_the_digits_upsampled():
    model = build_model(ViTConfig(image_size=56, patch_size=4, stem="linear", depth=1, dim=16, heads=2))
    assert input_shape(model) == (1, 56)
    data = Split(torch.randint(0, 255, (5, 28, 28), dtype=torch.uint8), torch.arange(5))
    logits = predict(model, data, torch.device("cpu"))
    x = fit_input(to_input(data.images, torch.device("cpu")), 1, 56)
    assert x.shape == (5, 1, 56, 56)
    torch.testing.assert_close(logits, model.eval()(x))


@pytest.mark.slow
def test_pretrained_route_cost_is_vit_tiny_at_224_against_the_shipped_architecture():
    route = pretrained_route_cost(rounds=1)
    tiny, shipped = route["vit_tiny"], route["shipped"]
    assert tiny["input"] == "3x224x224" and shipped["input"] == "1x28x28"
    assert 5_000_000 < tiny["parameters"] < 6_000_000  # width 192, depth 12 (10-class head)
    assert tiny["mflops_per_image"] > 50 * shipped["mflops_per_image"]
    text = markdown({"rows": [], "comparisons": [], "costs": {"pretrained_route": route}})
    assert "| vit_tiny | 3x224x224 |" in text


def test_a_suite_measured_at_its_training_batch_shows_the_benchmark_beside_the_runs_logs():
    def run(seed, speeds):
        return {"seed": seed, "train_wall_s": 1.0, "epochs": [{"images_per_s": s} for s in speeds]}

    speed = {"median": 20.0, "min": 19.0, "max": 21.0}
    rows = [
        summarise("full-784", [run(0, [10, 12]), run(1, [14, 12])], {"tokens": 784, "train_images_per_s": speed}),
        summarise("window-784", [run(0, [30, 30])], {"tokens": 784, "train_images_per_s": speed | {"median": 50.0}}),
    ]
    assert rows[0]["train_log_images_per_s"] == 12.0  # the mean over every epoch of every seed
    text = markdown({"suite": "efficient", "rows": rows, "comparisons": [], "costs": {"train_batch": 32}})
    assert "| variant | benchmark img/s (batch 32) | ratio | training logs img/s | ratio |" in text
    assert "| window-784 | 50 | 2.50 | 30 | 2.50 |" in text
    # measured at another batch than the runs trained with: no such table
    assert "training logs" not in markdown({"suite": "efficient", "rows": rows, "comparisons": [], "costs": {}})
    # nor for a suite whose runs' logs say nothing about the question (they shared the machine)
    assert "training logs" not in markdown(
        {"suite": "posenc", "rows": rows, "comparisons": [], "costs": {"train_batch": 64}}
    )
