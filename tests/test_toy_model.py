"""The shipped toy model: loads offline, is deterministic, stays small, and draws what it is asked."""

import pytest
import torch

from sdexplain.toy import evaluate, world
from sdexplain.toy.model import DEFAULT_GUIDANCE, EXTRAS_DIR, JUDGE_CRISP, MODEL_DIR, Judge

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model_index.json").exists(), reason="toy model not built: python -m sdexplain.toy.train")


@pytest.fixture(scope="module")
def toy_pipe():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def judge():
    return Judge.load()


def test_shipped_files_stay_under_20_mb():
    total = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert total < 20 * 2**20, f"{total / 2**20:.1f} MB"
    assert not list(MODEL_DIR.rglob("*.bin")) and list(MODEL_DIR.rglob("*.safetensors"))


def test_loads_offline_with_sd_classes(toy_pipe):
    assert type(toy_pipe).__name__ == "StableDiffusionPipeline"
    assert type(toy_pipe.unet).__name__ == "UNet2DConditionModel"
    assert type(toy_pipe.vae).__name__ == "AutoencoderKL"
    assert type(toy_pipe.text_encoder).__name__ == "CLIPTextModel"
    assert toy_pipe.tokenizer.model_max_length == 77
    assert toy_pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_same_seed_same_image(toy_pipe):
    images = [
        toy_pipe("a red cat", num_inference_steps=5, generator=torch.Generator().manual_seed(1), output_type="np").images
        for _ in range(2)
    ]
    assert (images[0] == images[1]).all()


@pytest.mark.slow
def test_judge_reads_held_out_scenes(judge):
    accuracy = evaluate.judge_accuracy(judge, n=300)
    assert min(accuracy.values()) >= 0.98, accuracy


def test_judge_pictures_names_what_the_judge_reads_off_rendered_scenes(judge):
    scenes = [world.make_scene("cat", "orange", "center", "large"), world.make_scene("circle", "blue", "left", "small")]
    pictures = [world.render(scene)[0] for scene in scenes]  # uint8 (64, 64, 3)
    assert evaluate.judge_pictures(judge, pictures) == [
        {"shape": "cat", "colour": "orange", "position": "center", "size": "large"},
        {"shape": "circle", "colour": "blue", "position": "left", "size": "small"},
    ]


def test_x0_readings_judge_every_step_and_find_where_the_answer_settles(toy_pipe, judge):
    from sdexplain.generate import generate

    _, run = generate(toy_pipe, "a red cat on the left", steps=4, cfg=3.0, seed=0, attention=False, preview_every=0)
    readings, settled = evaluate.x0_readings(toy_pipe, judge, run, "position")
    assert len(readings) == len(run.steps) and set(readings) <= set(judge.HEADS["position"])
    assert all(r == readings[-1] for r in readings[settled:])
    assert settled == 0 or readings[settled - 1] != readings[-1]
    with pytest.raises(ValueError, match="unknown attribute"):
        evaluate.x0_readings(toy_pipe, judge, run, "mood")


@pytest.mark.slow
def test_judge_reads_what_the_vae_decodes(toy_pipe, judge):
    # every generated image comes out of the VAE decoder: a judge that can't read round trips can't score samples
    accuracy = evaluate.judge_accuracy(judge, n=300, vae=toy_pipe.vae)
    assert min(accuracy.values()) >= 0.98, accuracy


@pytest.mark.slow
def test_vae_reconstructs_held_out_scenes(toy_pipe):
    assert evaluate.vae_error(toy_pipe.vae, n=64)["l1"] < 0.05


@pytest.fixture(scope="module")
def judged_at(toy_pipe, judge):
    """Adherence on the same 60 held-out prompts and seeds, per guidance scale, each computed once and
    scored by the shipped judge ("judge") and by the renders-only reference judge ("crisp")."""
    crisp = Judge.load(EXTRAS_DIR / JUDGE_CRISP)
    cache = {}

    def at(scale: float) -> dict[str, dict[str, float]]:
        if scale not in cache:
            cache[scale] = evaluate.adherence(toy_pipe, {"judge": judge, "crisp": crisp}, n=60, guidance_scale=scale)
        return cache[scale]

    return at


@pytest.fixture(scope="module")
def adherence_at(judged_at):
    return lambda scale: judged_at(scale)["judge"]


@pytest.mark.slow
def test_generated_pictures_look_like_renders(judged_at):
    # the VAE-file issue's bar: a judge that never saw a decoded picture reads the prompt's shape in
    # generated images at the default scale (README: 98 % on 200 prompts; the first decoder's cats were circles to it)
    crisp = judged_at(evaluate.DEFAULT_GUIDANCE)["crisp"]
    assert crisp["shape"] >= 0.9, crisp


@pytest.mark.slow
def test_prompt_adherence_at_the_default_scale(adherence_at):
    guided = adherence_at(DEFAULT_GUIDANCE)
    # the toy-model issue's bars: colour ≥ 90 %, shape/animal ≥ 80 %, position ≥ 90 % (README: 200 prompts)
    assert guided["colour"] >= 0.9 and guided["shape"] >= 0.8 and guided["position"] >= 0.9, guided


@pytest.mark.slow
def test_without_guidance_the_toy_follows_its_prompt_clearly_less(adherence_at):
    # trained last on captions that are wrong CAPTION_NOISE of the time, the conditional model alone (CFG 1)
    # follows each attribute about as often as its captions were right; guidance is what brings it up
    plain, guided = adherence_at(1.0), adherence_at(DEFAULT_GUIDANCE)
    for attribute in ("colour", "shape", "position", "size"):
        assert plain[attribute] <= 1 - world.CAPTION_NOISE + 0.1, (attribute, plain)
    for attribute in ("colour", "shape", "position"):  # the barred ones; 200 prompts: 25–29 points apart
        assert plain[attribute] <= guided[attribute] - 0.15, (attribute, plain, guided)


@pytest.mark.slow
def test_over_guidance_hurts_the_small_model(adherence_at):
    default, high = adherence_at(DEFAULT_GUIDANCE), adherence_at(7.5)
    assert high["colour"] + high["shape"] < default["colour"] + default["shape"] - 0.3, (default, high)


@pytest.mark.slow
def test_unconditional_samples_are_clearly_one_thing(toy_pipe, judge):
    result = evaluate.unconditional(toy_pipe, judge, n=60)
    assert result["confident"] >= 0.7, result  # 82 % measured on 200 samples (the bar: 80 %)
    assert result["shares"]["cat"] > 0.05 and result["shares"]["dog"] > 0.05, result  # both animals come out


@pytest.mark.slow
def test_forward_diffusion_destroys_cat_vs_dog(toy_pipe, judge):
    accuracy = evaluate.forward_accuracy(toy_pipe, judge, timesteps=(0, 999), n=64)
    assert accuracy[0] >= 0.95 and 0.3 <= accuracy[999] <= 0.7, accuracy


def test_slot_judge_reads_every_place_and_keeps_the_one_object_interface(tmp_path):
    from sdexplain.toy import world
    from sdexplain.toy.model import Judge, SlotJudge

    torch.manual_seed(0)
    judge = SlotJudge().eval()
    images = world.batch(3, seed=0, spec=world.V2)["images"]
    slots = judge.slots(images)
    assert slots["present"].shape == (3, 5) and slots["shape"].shape == (3, 5, 5)
    assert slots["colour"].shape == (3, 5, 6) and slots["size"].shape == (3, 5, 2)
    one = judge(images)  # Judge's interface: the attributes read at the most likely place
    place = slots["present"].argmax(1)
    for name in ("shape", "colour", "size"):
        assert torch.equal(one[name], slots[name][torch.arange(3), place])
    assert torch.equal(one["position"], slots["present"])
    judge.save(tmp_path / "j")
    loaded = Judge.load(tmp_path / "j")
    assert type(loaded) is SlotJudge
    assert torch.equal(loaded.slots(images)["colour"], slots["colour"])
