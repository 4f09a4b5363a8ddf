"""Issue 9 item 9: bad input is one line naming the value and what is allowed (exit 2), before
any long work starts; and issue 10 item 5: one vocabulary across subcommands."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from bigain_export.cli.main import build_parser, main
from bigain_export.models import save_denoiser
from bigain_export.models.registry import tiny_random_denoiser


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``bigain-export argv`` run in this process."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(capsys, *argv) -> str:
    rc, out, err = cli(capsys, *argv)
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and ": error: " in err, err
    return err.strip()


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    return save_denoiser(tiny_random_denoiser("dit"), tmp_path_factory.mktemp("m") / "dit", dtype=torch.float32)


@pytest.mark.parametrize("argv, named", [
    (["build", "--drift-inputs", "0"], "--drift-inputs: 0 is not allowed; allowed: an integer >= 1"),
    (["compare", "e", "--drift-inputs", "0"], "--drift-inputs: 0 is not allowed"),
    (["build", "--batch-size", "0"], "--batch-size: 0 is not allowed; allowed: an integer >= 1"),
    (["validate", "--out", "r", "--batch-size", "0"], "--batch-size: 0 is not allowed"),
    (["validate", "--out", "r", "--guidance", "nan"], "--guidance: 'nan' is not allowed; allowed: a finite number"),
    (["validate", "--out", "r", "--limit", "-3"], "--limit: -3 is not allowed"),
    (["build", "--alpha", "lots"], "--alpha: 'lots' is not allowed; allowed: a finite number, scheduled, or paper"),
    (["check", "r", "--baseline", "b", "--drift-max-abs", "inf"], "--drift-max-abs: 'inf' is not allowed"),
    (["build", "--feeds", "3"], "--feeds was renamed; use --drift-inputs N"),
    (["build", "--method", "tome"], "--method was renamed; use --config"),
    (["build", "--task", "classification"], "--task was renamed; use --alpha 0.9"),
    (["validate", "--out", "r", "--paper-alpha"], "--paper-alpha was renamed; use --alpha paper"),
    (["validate", "--out", "r", "--dtype", "float16"], "--dtype was renamed; use --precision"),
    (["export", "--batch", "2"], "--batch was renamed; use --batch-size"),
    (["build", "--alpha", "paper"], "--alpha paper is not allowed for an engine (it bakes one alpha)"),
])
def test_bad_flags_are_one_line(capsys, argv, named):
    assert named in one_line_error(capsys, *argv)


def test_device_without_cuda_is_named(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    err = one_line_error(capsys, "validate", "--out", str(tmp_path / "r"), "--device", "cuda")
    assert "--device 'cuda' is not available here (no CUDA device is visible); allowed: cpu" in err
    assert "--device 'tpu' is not allowed; allowed: cpu, cuda, cuda:N" in one_line_error(capsys, "build", "--device", "tpu")


@pytest.mark.parametrize("content", ["[1, 2]", "null", "3", '"bigain-kv"', '{"preset": 5}', '{"preset": "tome", "speed": 9}',
                                     '{"unet_levels": 0}', '{"ratio": "half"}'])
def test_config_files_that_are_not_configs_are_one_line(capsys, tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(content)
    for argv in (["build", "--config", str(path)], ["validate", "--out", str(tmp_path / "r"), "--config", str(path)],
                 ["build", "--config", content]):
        err = one_line_error(capsys, *argv)
        assert "--config" in err or "BiGainConfig" in err


def test_truncated_weights_are_one_line(capsys, tmp_path, dit_folder):
    import shutil

    broken = tmp_path / "dit"
    shutil.copytree(dit_folder, broken)
    weights = broken / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    err = one_line_error(capsys, "export", "--model", str(broken), "--out", str(tmp_path / "m.onnx"))
    assert "cannot load the weights" in err


def test_images_of_another_shape_are_named_before_measuring(capsys, tmp_path, dit_folder):
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 3, 64, 64), np.float32), labels=np.array([0, 1]))
    err = one_line_error(capsys, "validate", "--model", str(dit_folder), "--data", str(tmp_path / "big.npz"),
                         "--out", str(tmp_path / "r"), "--no-fid", "--config", "none")
    assert "holds images [2, 3, 64, 64] and labels [2]; allowed for this model: images [N, 1, 32, 32]" in err
    np.savez(tmp_path / "labels.npz", images=np.zeros((2, 1, 32, 32), np.float32), labels=np.array([0, 99]))
    err = one_line_error(capsys, "validate", "--model", str(dit_folder), "--data", str(tmp_path / "labels.npz"),
                         "--out", str(tmp_path / "r"), "--no-fid", "--config", "none")
    assert "has label 99; allowed for this model: 0 .. 9" in err
    assert not (tmp_path / "r" / "report.json").exists()


def test_output_paths_that_cannot_work_are_named(capsys, tmp_path):
    err = one_line_error(capsys, "export", "--out", str(tmp_path) + "/")
    assert "is a folder; allowed: a file path such as" in err
    (tmp_path / "file").write_text("x")
    err = one_line_error(capsys, "validate", "--out", str(tmp_path / "file"), "--no-fid")
    assert "--out" in err and "is a file" in err
    err = one_line_error(capsys, "build", "--out", str(tmp_path / "file" / "engine"))
    assert "is not writable" in err or "is a file" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    assert "is a folder that is not an engine" in one_line_error(capsys, "build", "--out", str(tmp_path / "mine"))


def test_a_downsample_that_does_not_divide_the_grid_is_named(capsys, tmp_path, dit_folder):
    err = one_line_error(capsys, "export", "--model", str(dit_folder), "--config", "todo", "--downsample", "3",
                         "--out", str(tmp_path / "m.onnx"))
    assert "downsample=3 does not divide the 16x16 token grid" in err and "\x1b[" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_version_and_verbose_after_the_subcommand(capsys):
    rc, out, _ = cli(capsys, "--version")
    assert rc == 0 and out.startswith("bigain-export 0.")
    parser = build_parser()
    assert parser.parse_args(["check", "r", "--baseline", "b", "-v"]).verbose is True
    assert parser.parse_args(["-v", "check", "r", "--baseline", "b"]).verbose is True
    assert parser.parse_args(["check", "r", "--baseline", "b"]).verbose is False


def test_one_vocabulary_across_subcommands():
    """The same concept has the same flag and the same default in every subcommand that takes it."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices

    def options(name):
        return {opt: action for action in subparsers[name]._actions for opt in action.option_strings
                if action.help != "==SUPPRESS=="}

    shared = {"--config": ("build", "export", "validate"), "--batch-size": ("build", "export", "validate"),
              "--precision": ("build", "export", "validate"), "--drift-inputs": ("build", "compare", "validate"),
              "--model": ("build", "export", "compare", "validate"), "--device": ("build", "compare", "validate"),
              "--alpha": ("build", "export", "validate"), "--drift-max-abs": ("validate", "check"),
              "--drift-mean-abs": ("validate", "check"), "-v": ("build", "export", "info", "compare", "validate", "check")}
    for flag, commands in shared.items():
        actions = [options(c).get(flag) for c in commands]
        assert all(actions), f"{flag} missing in one of {commands}"
        defaults = {a.default for a in actions}
        assert len(defaults) == 1, f"{flag} has defaults {defaults} across {commands}"
    for old in ("--feeds", "--dtype", "--batch", "--task", "--paper-alpha", "--max-drift-abs"):
        assert all(old not in options(c) for c in subparsers), f"{old} is still a documented flag"


def test_the_parser_repeats_the_registry_names_exactly():
    from bigain_export.cli import args
    from bigain_export.models import registry

    assert args.BUILTIN_MODELS == registry.BUILTIN_MODELS and args.DEFAULT_MODEL == registry.DEFAULT_MODEL
    from bigain_export.models.prompts import DEFAULT_TEMPLATE

    assert args.DEFAULT_PROMPT_TEMPLATE == DEFAULT_TEMPLATE


def test_a_mistyped_kernel_switch_is_one_line_before_any_work(capsys, monkeypatch, dit_folder):
    monkeypatch.setenv("BIGAIN_KERNELS", "refrence")
    err = one_line_error(capsys, "info", str(dit_folder))
    assert "BIGAIN_KERNELS='refrence' is not a switch; allowed: unset or 'reference'" in err
