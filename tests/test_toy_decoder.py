"""The toy's VAE file: a fine-tuned decoder on the first VAE's frozen encoder (sdexplain.toy.train_decoder)."""

import numpy as np
import pytest
import torch

from sdexplain.toy import evaluate, train, train_common, train_decoder, world
from sdexplain.toy.model import EXTRAS_DIR, JUDGE_CRISP, MODEL_DIR, VAE_ORIGINAL, Judge, vae_round_trip

pytestmark = pytest.mark.skipif(not (EXTRAS_DIR / VAE_ORIGINAL).exists(), reason="toy VAE file not built: python -m sdexplain.toy.train --part vae-decoder")


@pytest.fixture(scope="module")
def vaes():
    from diffusers import AutoencoderKL

    tuned = AutoencoderKL.from_pretrained(MODEL_DIR / "vae", local_files_only=True)
    original = AutoencoderKL.from_pretrained(EXTRAS_DIR / VAE_ORIGINAL, local_files_only=True)
    return tuned.eval(), original.eval()


def test_same_architecture_same_encoder_same_latent_space(vaes):
    tuned, original = vaes
    assert {k: v for k, v in tuned.config.items() if not k.startswith("_")} == {k: v for k, v in original.config.items() if not k.startswith("_")}  # a VAE file is the same AutoencoderKL, scaling factor included
    for name, value in original.encoder.state_dict().items():
        assert torch.equal(tuned.encoder.state_dict()[name], value), name
    for name, value in original.quant_conv.state_dict().items():
        assert torch.equal(tuned.quant_conv.state_dict()[name], value), name


def test_both_decoders_decode_the_same_latent(vaes):
    tuned, original = vaes
    x = world.batch(4, seed=evaluate.HELD_OUT_SEED + 3)["images"]
    with torch.no_grad():
        z = original.encode(x).latent_dist.mode()  # (4, 4, 8, 8)
        assert torch.equal(z, tuned.encode(x).latent_dist.mode())
        a, b = tuned.decode(z).sample, original.decode(z).sample
    assert a.shape == b.shape == x.shape
    assert (a - b).abs().mean() > 0.005  # the decoders differ where it matters: detail


def test_face_contrast_is_full_on_renders_and_refuses_other_shapes():
    scenes = evaluate.faces(6)
    renders = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    assert all(s.shape in ("cat", "dog") for s in scenes)
    assert (evaluate.face_contrast(renders, scenes) > 0.3).all()  # dark eyes on a coloured body
    flat = renders.clone()
    for i, s in enumerate(scenes):  # paint the eyes and nose over in the body's colour: no face left
        body, _, detail = world.parts(s)
        flat[i][:, torch.from_numpy(detail)] = renders[i][:, torch.from_numpy(body)].mean(-1, keepdim=True)
    assert evaluate.face_contrast(flat, scenes).abs().max() < 1e-5
    with pytest.raises(ValueError, match="cats and dogs"):
        evaluate.face_contrast(renders[:1], [world.make_scene("circle", "red", "left", "large")])


def test_the_fine_tuned_decoder_keeps_faces_the_first_one_erased(vaes):
    tuned, original = vaes
    kept = evaluate.face_contrast_kept(tuned, n=48)
    assert kept >= 0.7, kept
    assert evaluate.face_contrast_kept(original, n=48) < 0.2  # the faceless blobs this decoder replaced


def test_round_trips_look_like_renders_to_a_judge_that_saw_only_renders(vaes):
    tuned, _ = vaes
    crisp = Judge.load(EXTRAS_DIR / JUDGE_CRISP)
    accuracy = evaluate.judge_accuracy(crisp, n=200, vae=tuned)
    assert accuracy["shape"] >= 0.97, accuracy


def test_decoder_training_freezes_the_encoder_and_resumes(tmp_path):
    from diffusers import AutoencoderKL

    workdir = tmp_path / "work"
    original = AutoencoderKL.from_pretrained(EXTRAS_DIR / VAE_ORIGINAL, local_files_only=True)
    train_common.save_checkpoint(workdir / "vae.pt", {"model": original.state_dict(), "opt": {}, "step": 10**9})
    train.main(["--part", "vae-decoder", "--vae-decoder-steps", "1", "--workdir", str(workdir), "--checkpoint-every", "1"])
    state = torch.load(workdir / "vae_decoder.pt", weights_only=True)
    assert state["step"] == 1 and state["ema"].keys() == train_decoder.decoder_parts(original).state_dict().keys()
    for name, value in original.state_dict().items():  # the encoder, hence the latent space, stays bit for bit
        if name.startswith("encoder.") or name.startswith("quant_conv."):
            assert torch.equal(state["model"][name], value), name
    assert any(not torch.equal(state["model"][k], v) for k, v in original.state_dict().items() if k.startswith("decoder."))
    train.main(["--part", "vae-decoder", "--vae-decoder-steps", "2", "--workdir", str(workdir), "--checkpoint-every", "1"])
    assert torch.load(workdir / "vae_decoder.pt", weights_only=True)["step"] == 2  # resumed, one more step
    tuned = train_decoder.load_vae_decoder(workdir)
    x = world.batch(2, seed=5)["images"]
    assert vae_round_trip(tuned, x).shape == x.shape
