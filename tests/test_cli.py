"""The `sdexplain` command line, on a tiny random model saved to a folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdexplain
from sdexplain import cli, loading
from sdexplain import images as sd_images
from sdexplain.architectures import build_tiny_pipeline

generate_module = pytest.importorskip("sdexplain.generate", reason="sdexplain.generate is not written yet")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_pipeline")
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    return folder


def _generate_args(folder, out, *extra):
    return ["generate", "--prompt", "a red circle", "--model", str(folder), "--device", "cpu", "--steps", "2", "--out", str(out), *extra]


# ----------------------------------------------------------------------------- generate


def test_generate_writes_the_strip_and_a_summary(tiny_folder, tmp_path, capsys):
    out = tmp_path / "steps.png"
    assert cli.main(_generate_args(tiny_folder, out, "--tile", "64")) == 0
    printed = capsys.readouterr().out
    assert "PNDMScheduler" in printed and "tokens    3: a</w> red</w> circle</w>" in printed
    assert "steps     3 U-Net evaluations" in printed  # PNDM: N + 1 evaluations
    assert "guidance  7\n" in printed and "MiB of tensors" in printed and f"wrote     {out}" in printed
    strip = Image.open(out)
    assert strip.format == "PNG" and strip.mode == "RGB"
    assert strip.height == 4 + 34 + 2 * (64 + 4)  # top margin, labels, two rows of 64-px tiles (+ gaps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.png"]  # no temporary file left


@pytest.mark.slow
def test_guidance_defaults_to_the_models_own_scale(tiny_folder, tmp_path, capsys):
    from sdexplain.toy.model import DEFAULT_GUIDANCE

    assert sdexplain.default_guidance("toy") == DEFAULT_GUIDANCE and sdexplain.default_guidance(str(tiny_folder)) == 7.0
    assert cli.main(["generate", "--prompt", "a red cat", "--device", "cpu", "--steps", "2", "--out", str(tmp_path / "toy.png")]) == 0
    assert f"guidance  {DEFAULT_GUIDANCE:g}" in capsys.readouterr().out
    assert cli.main(["generate", "--prompt", "a red cat", "--device", "cpu", "--steps", "2", "--cfg", "2", "--out", str(tmp_path / "toy.png")]) == 0
    assert "guidance  2\n" in capsys.readouterr().out  # asked for: the default doesn't apply


def test_scheduler_option_changes_the_sampler(tiny_folder, tmp_path, capsys):
    assert cli.main(_generate_args(tiny_folder, tmp_path / "s.png", "--scheduler", "ddim", "--cfg", "1")) == 0
    printed = capsys.readouterr().out
    assert "DDIMScheduler" in printed and "steps     2 U-Net evaluations" in printed
    assert "guidance  off" in printed


def test_step_strip_shows_each_steps_decoded_latents(tiny_pipe):
    _, run = generate_module.generate(tiny_pipe, "a red circle", steps=3, cfg=7.5, seed=0, preview_every=0)
    tile = 64
    strip = np.asarray(cli.step_strip(tiny_pipe, run, tile=tile, columns=2))
    # 4 PNDM steps in 2 columns: 2 blocks. Step 3 is block 1, column 1.
    expected = sd_images.to_uint8(sd_images.vae_decode(tiny_pipe.vae, run.steps[3].x0[:1]))
    expected = np.asarray(Image.fromarray(expected).resize((tile, tile), Image.Resampling.NEAREST))
    label_w = strip.shape[1] - 2 * (tile + 4) - 4
    block_h = 34 + 2 * (tile + 4)
    x, y = label_w + (tile + 4), 4 + block_h + 34 + (tile + 4)  # second row: x0
    assert strip.shape[0] == 4 + 2 * block_h
    np.testing.assert_allclose(strip[y : y + tile, x : x + tile].astype(int), expected.astype(int), atol=2)


def test_sigma_schedulers_latents_are_brought_to_the_vae_scale(tiny_pipe):
    loading.set_scheduler(tiny_pipe, "euler")
    _, run = generate_module.generate(tiny_pipe, "a red circle", steps=3, seed=0, preview_every=0)
    first = run.steps[0]
    assert first.latent_in.std() > 3  # Euler holds x_t / sqrt(ᾱ): σ_max ≈ 14 at t=999
    assert 0.7 < cli._vp_latent(tiny_pipe, first).std() < 1.3  # x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε


def test_a_failed_run_leaves_the_previous_file_untouched(tiny_folder, tmp_path, monkeypatch):
    out = tmp_path / "steps.png"
    out.write_bytes(b"previous")

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cli.main(_generate_args(tiny_folder, out))
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["steps.png"]


@pytest.mark.parametrize(
    "change, message",
    [
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--steps", "two"], "--steps: expected a whole number"),
        (["--height", "65"], "--height: must be a multiple of 8"),
        (["--cfg", "-1"], "--cfg: must be a finite number >= 0, got -1"),
        (["--cfg", "inf"], "--cfg: must be a finite number >= 0, got inf"),
        (["--cfg", "nan"], "--cfg: must be a finite number >= 0, got nan"),
        (["--seed", "-3"], "--seed: must be in 0 … 2**64 - 1"),
        (["--seed", str(2**64)], f"--seed: must be in 0 … 2**64 - 1 = {2**64 - 1} (torch.Generator's range), got {2**64}"),
        (["--steps", "1000"], "--steps: steps must be at most 999, one fewer than the 1000 timesteps"),
        (["--config", "some/folder"], "config= is only used with a single .safetensors checkpoint file"),
        (["--scheduler", "nope"], "unknown scheduler 'nope'; allowed: ddim"),
        (["--device", "gpu"], "--device: unknown device 'gpu'"),
        (["--dtype", "fp64"], "unknown dtype 'fp64'"),
        (["--model", "no/such/model/folder"], "--model: no such file or folder"),
    ],
)
def test_bad_arguments_exit_with_code_2(tiny_folder, tmp_path, capsys, change, message):
    args = _generate_args(tiny_folder, tmp_path / "x.png")
    for i in range(0, len(change), 2):
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i : i + 2]
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "out, message",
    [("steps.jpg", "--out must name a .png file"), ("missing/steps.png", "does not exist")],
)
def test_bad_output_paths_are_refused_before_loading(tmp_path, capsys, out, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--prompt", "x", "--model", "no/such/model/folder", "--out", str(tmp_path / out)])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_an_output_folder_or_an_unwritable_place_is_refused_before_loading(tmp_path, capsys):
    folder = tmp_path / "strips.png"  # a folder, even with a .png name
    folder.mkdir()
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--prompt", "x", "--model", "no/such/model/folder", "--out", str(folder)])
    assert info.value.code == 2 and "is a folder; name a .png file" in capsys.readouterr().err
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no file can be created even by root")
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--prompt", "x", "--model", "no/such/model/folder", "--out", "/proc/steps.png"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--out: cannot write '/proc/steps.png'" in err and "--model" not in err


def test_a_corrupt_checkpoint_file_is_named_and_config_can_be_given(tiny_folder, tmp_path, capsys):
    bad = tmp_path / "c.safetensors"
    bad.write_bytes(np.random.RandomState(0).bytes(5000))
    with pytest.raises(SystemExit) as info:
        cli.main(["info", "--model", str(bad), "--config", str(tiny_folder), "--device", "cpu"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"{bad} is not a readable .safetensors file" in err and "truncated or corrupt" in err
    assert "could not be fetched" not in err and "offline" not in err


def test_missing_prompt_and_missing_command_are_usage_errors(capsys):
    for argv in (["generate", "--out", "x.png"], []):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert "required" in capsys.readouterr().err


# ----------------------------------------------------------------------------- info


def test_info_prints_the_description(tiny_folder, capsys):
    assert cli.main(["info", "--model", str(tiny_folder), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "text_width          32" in printed and "vae_scale_factor    8" in printed
    assert "unet_blocks         CrossAttnDownBlock2D, CrossAttnDownBlock2D" in printed
    [params] = [line for line in printed.splitlines() if line.startswith("parameters ")]
    assert "text_encoder 0.03 M" in params and "unet 1.06 M" in params and "total 1.15 M" in params


@pytest.mark.slow  # a fresh interpreter importing torch + diffusers: several seconds
def test_python_dash_m_sdexplain_info_json(tiny_folder):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "sdexplain", "info", "--model", str(tiny_folder), "--device", "cpu", "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["latent_channels"] == 4 and info["scheduler"] == "PNDMScheduler"
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total")
