"""The train command's flags are made from the config dataclasses: every field has one, or a reason
in ``_NOT_FLAGS`` why it must not."""

import dataclasses
import typing
from pathlib import Path

import pytest

from model.config import ViTConfig
from training.cli import _HELP, _NOT_FLAGS, build_parser, config_from_args, flag_fields
from training.config import AugmentConfig, TrainConfig

CONFIGS = (TrainConfig, ViTConfig, AugmentConfig)
FIELDS = [(config, f) for config in CONFIGS for f in dataclasses.fields(config)]


def _flags() -> dict[str, str]:
    """dest -> option string of every flag of the train command."""
    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    return {option: action.dest for action in train._actions for option in action.option_strings}


def test_every_config_field_has_a_flag_or_a_reason_not_to():
    dests = set(_flags().values())
    for config, f in FIELDS:
        assert f.name in dests or f.name in _NOT_FLAGS, f"{config.__name__}.{f.name} has no flag"
    names = {f.name for _, f in FIELDS}
    assert set(_NOT_FLAGS) <= names and set(_HELP) <= names  # no reason or help outlives its field
    assert not set(_NOT_FLAGS) & set(_HELP)


@pytest.mark.parametrize(
    "config,field",
    [(c, f) for c in CONFIGS for f in flag_fields(c)],
    ids=[f"{c.__name__}.{f.name}" for c in CONFIGS for f in flag_fields(c)],
)
def test_each_flag_sets_its_field(config, field):
    hint = typing.get_type_hints(config)[field.name]
    flag = "--" + field.name.replace("_", "-")
    if hint is bool:
        argv, expected = ["--no-" + flag[2:] if field.default else flag], not field.default
    elif typing.get_origin(hint) is typing.Literal:
        expected = typing.get_args(hint)[-1]
        argv = [flag, expected]
    else:
        kind = next((t for t in (int, float, Path, str) if t in (hint, *typing.get_args(hint))), None)
        expected = {int: 3, float: 0.25, Path: Path("somewhere"), str: "x"}[kind]
        argv = [flag, str(expected)]
    assert vars(build_parser().parse_args(["train", *argv]))[field.name] == expected


def test_the_flags_of_fields_without_one_before_reach_the_config():
    args = ["--pool", "mean", "--attention", "window", "--window", "7", "--image-size", "56", "--kv-pool", "7"]
    args += ["--stem-lr-scale", "3", "--no-export"]
    cfg = config_from_args(build_parser().parse_args(["train", *args]))
    assert (cfg.model.attention, cfg.model.window, cfg.model.image_size, cfg.model.kv_pool) == ("window", 7, 56, 7)
    assert cfg.stem_lr_scale == 3.0 and cfg.export is False
    assert config_from_args(build_parser().parse_args(["train"])) == TrainConfig()  # no flag: the preset's values


def test_the_train_flags_keep_their_names():
    kept = [
        "--preset", "--resume", "--dry-run", "--download", "--epochs", "--batch-size", "--lr", "--min-lr",
        "--weight-decay", "--warmup-epochs", "--label-smoothing", "--ema-decay", "--grad-clip", "--val-size",
        "--seed", "--limit", "--device", "--amp", "--threads", "--data-dir", "--run-dir", "--name", "--output",
        "--init", "--outlier-weight", "--outliers-per-kind", "--typed-digits", "--staged-digits", "--distill",
        "--distill-alpha", "--distill-tau", "--teacher", "--patch-size", "--dim", "--depth", "--heads",
        "--mlp-ratio", "--dropout", "--attn-dropout", "--drop-path", "--pos-embed", "--pool", "--stem", "--impl",
        "--in-chans", "--rotate", "--translate", "--scale", "--shear", "--no-augment",
    ]  # fmt: skip
    flags = _flags()
    assert set(kept) <= set(flags)
    assert all(flags[f] == f[2:].replace("-", "_") for f in kept if f != "--no-augment")


def test_card_without_the_training_run_names_the_file_and_the_flag(tmp_path, tiny_checkpoint, capsys):
    from training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["card", "--checkpoint", str(tiny_checkpoint), "--run", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "metrics.jsonl" in message and "--run" in message


@pytest.mark.parametrize("argv", [["--distill", "token"], ["--distill", "hard", "--distill-token"]])
def test_a_distillation_token_without_token_distillation_is_refused_by_both_flags(tmp_path, capsys, argv):
    from training.cli import main

    teacher = ["--teacher", str(tmp_path / "teacher.safetensors")]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, *teacher, "--dry-run", "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--distill token" in message and "--distill-token" in message
    assert not list(tmp_path.iterdir())  # refused before anything is written
