"""The command line itself: options generated from the configs, presets between defaults and given options,
one error path (usage errors, clean messages, environment faults, --debug)."""
import dataclasses
import re
import subprocess
import sys
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from vmae.cli.common import group, handle_errors
from vmae.cli.data import data
from vmae.cli.options import config_options, given
from vmae.cli.train import train
from vmae.config import option
from vmae.curation.ava import AvaConfig
from vmae.curation.download import DownloadConfig
from vmae.curation.kinetics import BuildK710Config
from vmae.errors import ConfigError, VmaeError
from vmae.training import config as C

REQUIRED = ["--shards", "s-{000000..000001}.tar", "--output-dir", "out"]


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("group, command, cls", [
    (train, "pretrain", C.PretrainConfig), (train, "finetune", C.FinetuneConfig), (train, "distill", C.DistillConfig),
    (train, "eval", C.EvalConfig), (train, "extract-features", C.FeatureConfig),
    (data, "download", DownloadConfig), (data, "ava", AvaConfig), (data, "build-k710", BuildK710Config)])
def test_help_shows_every_configs_default(group, command, cls):
    options = CliRunner().invoke(group, [command, "--help"]).output.split("Options:\n")[1]
    entries = {flat(e).split()[0]: flat(e) for e in re.split(r"\n  (?=-)", options)}
    assert "--tubelet-size" not in entries and "--crf" not in entries  # a field without help stays config-only
    for field in dataclasses.fields(cls):
        option = "--" + field.name.replace("_", "-")
        assert option in entries or "help" not in field.metadata, (command, option)
        if isinstance(field.default, (int, float, str)) and not isinstance(field.default, bool) and \
                option in entries and field.default != "":
            assert entries[option].endswith(f"[default: {field.default}]"), (command, field.name, entries[option])
    if command == "distill":  # the run's own numbers, not finetune's (30 epochs, no clipping)
        assert entries["--epochs"] == "--epochs INTEGER Passes over the training videos. [default: 100]"
        assert entries["--clip-grad"] == "--clip-grad FLOAT Gradient-norm clip. 0 turns it off. [default: 1.0]"


@pytest.fixture
def captured(monkeypatch):
    """The config each training command hands to its library function (which is not run)."""
    from vmae.training import finetune, pretrain

    configs = []
    monkeypatch.setattr(pretrain, "pretrain", lambda cfg: configs.append(cfg) or {"rank": 1})
    monkeypatch.setattr(finetune, "finetune", lambda cfg: configs.append(cfg) or {"rank": 1})
    return configs


def test_a_preset_is_not_overridden_by_options_nobody_gave_and_given_options_win(captured):
    ssv2_g = ["finetune", "--preset", "ssv2", "--model", "vit_giant_patch14_224", *REQUIRED]
    result = CliRunner().invoke(train, ssv2_g)
    assert result.exit_code == 0 and "preset ssv2: the official script, ViT-g row" in result.output
    refused = CliRunner().invoke(train, ["finetune", "--preset", "ucf101", "--model", "vit_small_patch16_224",
                                         *REQUIRED])
    assert refused.exit_code == 2 and "It has recipes for ViT-g" in flat(refused.output)
    assert CliRunner().invoke(train, [*ssv2_g, "--epochs", "7", "--flip", "--clip-grad", "0"]).exit_code == 0
    preset, mine = captured
    # the preset's numbers, not the generated options' defaults (30 epochs, flip on, lr 1e-3)
    assert (preset.epochs, preset.flip, preset.base_lr, preset.num_classes) == (20, False, 3e-4, 174)
    assert (mine.epochs, mine.flip, mine.clip_grad, mine.base_lr) == (7, True, None, 3e-4)
    assert CliRunner().invoke(train, ["pretrain", "--preset", "vit-b-hybrid", *REQUIRED]).exit_code == 0
    assert (captured[-1].epochs, captured[-1].base_lr, captured[-1].clip_grad) == (200, 2.5e-4, None)


def test_sentinels_are_the_configs():
    cfg = C.finetune_config(shards="s", output_dir="o", clip_grad=0, layer_decay=1, randaug="none")
    assert (cfg.clip_grad, cfg.layer_decay, cfg.randaug) == (None, None, None)
    assert C.pretrain_config(shards="s", output_dir="o", clip_grad=0.0).clip_grad is None
    # None means "not given", which would keep RandAugment on: the library refuses it and names the off value
    with pytest.raises(ConfigError, match="randaug=None would mean 'not given'.*pass randaug='none'"):
        C.finetune_config(shards="s", output_dir="o", randaug=None)
    assert C.finetune_config(shards="s", output_dir="o", epochs=None).epochs == 30  # no off value: not given


def test_a_new_config_field_with_help_becomes_an_option():
    @dataclass(frozen=True)
    class Knobs(C.RunConfig):
        new_knob: float = option(0.5, "A knob added later.")
        epochs: int = 40

    @click.command()
    @config_options(Knobs)
    def cmd(**options):
        cfg = Knobs(**given(options))
        click.echo(f"{cfg.new_knob} {cfg.epochs} {cfg.batch_size}")

    helptext = flat(CliRunner().invoke(cmd, ["--help"]).output)
    assert "--new-knob FLOAT A knob added later. [default: 0.5]" in helptext
    assert "--epochs INTEGER Passes over the training videos. [default: 40]" in helptext
    assert CliRunner().invoke(cmd, [*REQUIRED, "--new-knob", "2"]).output == "2.0 40 32\n"


def test_config_errors_are_usage_errors_with_the_message():
    result = CliRunner().invoke(train, ["pretrain", *REQUIRED, "--decoder-mask-ratio", "0.3"])
    assert result.exit_code == 2 and "Usage: train pretrain" in result.output
    assert "decoder_mask_ratio 0.3 must be one of" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(train, ["finetune", *REQUIRED, "--batch-size", "3", "--num-sample", "1"])
    assert result.exit_code == 2 and "mixup needs an even number of clips" in result.output


def fault_cli(tmp_path):
    @group
    def cli(debug):
        """A command group as vmae-data and vmae-train are."""

    @cli.command()
    @click.argument("kind")
    @click.option("--out")
    @handle_errors
    def run(kind, out):
        if kind == "vmae":
            raise VmaeError("manifest.parquet, row 3: no url; add one or drop the row")
        if kind == "config":
            raise ConfigError("--workers must be at least 1")
        if kind == "not-a-folder":
            (tmp_path / "file").write_text("")
            open(tmp_path / "file" / "x.json", "w")  # a real ENOTDIR, naming the file
        if kind == "full":
            raise OSError(28, "No space left on device")  # as a write() reports it: no file name
        raise RuntimeError("a bug")
    return cli


def test_one_error_path_for_user_errors_faults_and_bugs(tmp_path):
    cli = fault_cli(tmp_path)
    result = CliRunner().invoke(cli, ["run", "vmae"])
    assert result.exit_code == 1 and result.output == "Error: manifest.parquet, row 3: no url; add one or drop the row\n"
    result = CliRunner().invoke(cli, ["run", "config"])
    assert result.exit_code == 2 and "Error: --workers must be at least 1" in result.output
    result = CliRunner().invoke(cli, ["run", "not-a-folder"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"{tmp_path / 'file' / 'x.json'}: a parent is not a folder; check the path" in result.output
    result = CliRunner().invoke(cli, ["run", "full", "--out", "clips/"])
    assert result.exit_code == 1 and "clips/: no space left on device; free space there" in result.output
    result = CliRunner().invoke(cli, ["run", "bug"])  # not a user's error: the traceback stays
    assert isinstance(result.exception, RuntimeError)
    result = CliRunner().invoke(cli, ["--debug", "run", "vmae"])
    assert isinstance(result.exception, VmaeError)


def run_cli(*args):
    return subprocess.run([sys.executable, "-c", "from vmae.cli.train import train; train()", *args],
                          capture_output=True, text=True, timeout=120)


def test_debug_shows_the_traceback():
    args = ["pretrain", *REQUIRED, "--decoder-mask-ratio", "0.3"]
    plain = run_cli(*args)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "decoder_mask_ratio" in plain.stderr
    debug = run_cli("--debug", *args)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "vmae.errors.ConfigError: invalid PretrainConfig: decoder_mask_ratio 0.3" in debug.stderr


def test_help_does_not_import_torch():
    code = ("import sys\nfrom vmae.cli.train import train\nfrom vmae.cli.data import data\n"
            "for cli, cmd in ((train, 'pretrain'), (train, 'finetune'), (data, 'download')):\n"
            "    try:\n        cli([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("False"), done.stdout[-500:] + done.stderr[-2000:]
