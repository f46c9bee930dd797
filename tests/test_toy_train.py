"""The training script runs end to end, resumes, and exports a loadable pipeline (a few steps only)."""

import pytest
import torch

from sdexplain.toy import train


@pytest.mark.slow
def test_training_smoke_run_resumes_and_exports(tmp_path):
    workdir, out, extras = tmp_path / "work", tmp_path / "model", tmp_path / "extras"
    common = ["--workdir", str(workdir), "--out", str(out), "--extras-out", str(extras), "--checkpoint-every", "1", "--batch-size", "4", "--dataset-size", "32"]
    common += ["--classifier-steps", "1", "--depth-estimator-steps", "1", "--depth-unet-steps", "1"]
    train.main(["--part", "vae", "--vae-steps", "1", *common])
    assert torch.load(workdir / "vae.pt", weights_only=False)["step"] == 1
    train.main(["--part", "vae", "--vae-steps", "2", *common])  # resumes from step 1
    assert torch.load(workdir / "vae.pt", weights_only=False)["step"] == 2
    train.main(["--part", "all", "--vae-steps", "2", "--judge-steps", "1", "--unet-steps", "2", *common])
    state = torch.load(workdir / "unet.pt", weights_only=False)
    assert state["step"] == 2 and len(state["history"]) == 2

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    image = pipe("a red cat", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)
    assert (out / "judge" / "judge.safetensors").exists()
    assert (extras / "classifier" / "classifier.safetensors").exists()
    assert (extras / "depth_estimator" / "depth_estimator.safetensors").exists()
    assert (extras / "depth_unet" / "config.json").exists()


def test_missing_part_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--part vae"):
        train.load_vae(tmp_path)
