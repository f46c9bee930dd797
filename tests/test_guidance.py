"""Guidance loops against the stock pipeline, and their errors."""

import numpy as np
import pytest
import torch

from sdexplain import guidance, widgets


def _stock(pipe, prompt, scale, steps=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, guidance_scale=scale, num_inference_steps=steps, generator=generator, output_type="np").images[0]


def test_batched_sweep_matches_the_stock_pipeline_per_scale(tiny_pipe):
    tiny_pipe.set_progress_bar_config(disable=True)
    sweep = guidance.cfg_sweep(tiny_pipe, "a red cat", scales=[1.0, 3.0, 7.5], steps=3, seed=0, progress=False)
    for scale, image in zip(sweep.scales, sweep.images):
        ours = np.asarray(image, dtype=np.float32) / 255
        stock = _stock(tiny_pipe, "a red cat", scale)
        assert np.abs(ours - stock).max() <= 1 / 255 + 1e-6, scale  # equal up to 8-bit rounding of batched float math


def test_sweep_records_both_predictions_per_step_and_guided_noise_follows_the_formula(tiny_pipe):
    sweep = guidance.cfg_sweep(tiny_pipe, "a blue dog", scales=[0.0, 2.0], steps=2, progress=False)
    n_steps = len(tiny_pipe.scheduler.timesteps)  # PNDM evaluates the U-Net steps + 1 times
    assert sweep.timesteps == tiny_pipe.scheduler.timesteps.tolist()
    assert len(sweep.noise_uncond) == len(sweep.noise_cond) == n_steps
    assert sweep.noise_cond[0].shape == (2, 4, 8, 8)
    guided = sweep.noise_guided(0)
    assert torch.allclose(guided[0], sweep.noise_uncond[0][0])  # w = 0: the prompt is ignored
    expected = sweep.noise_uncond[0][1] + 2.0 * (sweep.noise_cond[0][1] - sweep.noise_uncond[0][1])
    assert torch.allclose(guided[1], expected)
    assert torch.equal(sweep.latents[0][0], sweep.latents[0][1])  # every scale starts from the same noise


@pytest.mark.parametrize("scales, message", [([], "at least one"), ([-1.0], "≥ 0")])
def test_bad_scales_are_refused(tiny_pipe, scales, message):
    with pytest.raises(ValueError, match=message):
        guidance.cfg_sweep(tiny_pipe, "a cat", scales=scales, steps=2)


def test_bad_steps_are_refused(tiny_pipe):
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1, got 0"):
        guidance.cfg_sweep(tiny_pipe, "a cat", steps=0)


class _LinearClassifier(torch.nn.Module):
    """A fixed linear read-out of the latent's mean per channel: enough to check the gradient's direction."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
            self.linear.bias.zero_()

    def forward(self, x, t):
        return {"shape": self.linear(x.mean(dim=(2, 3)))}


def test_classifier_guidance_moves_samples_toward_the_target(tiny_pipe):
    classifier = _LinearClassifier()
    _, plain = guidance.classifier_guided_sample(tiny_pipe, classifier, target=0, scale=0.0, n=4, steps=3)
    _, guided = guidance.classifier_guided_sample(tiny_pipe, classifier, target=0, scale=50.0, n=4, steps=3)
    assert plain.shape == (len(tiny_pipe.scheduler.timesteps), 4)
    assert guided[-1].mean() > plain[-1].mean()  # p(target | x_t) rises with the scale


def test_negative_classifier_scale_is_refused(tiny_pipe):
    with pytest.raises(ValueError, match="scale must be ≥ 0, got -1"):
        guidance.classifier_guided_sample(tiny_pipe, _LinearClassifier(), target=0, scale=-1)


# ----------------------------------------------------------------------------- measurements


def test_mean_pairwise_distance():
    same = torch.zeros(3, 3, 4, 4)
    assert guidance.mean_pairwise_distance(same) == 0.0
    pair = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    assert guidance.mean_pairwise_distance(pair) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        guidance.mean_pairwise_distance(same[:1])


def test_adherence_and_diversity_counts_what_the_judge_says(tiny_pipe):
    from sdexplain.toy.evaluate import judge_images
    from sdexplain.toy.model import Judge

    judge = Judge.load()
    curve = guidance.adherence_and_diversity(tiny_pipe, judge, ["a red cat", "a blue circle on the left"], [0.0, 4.0], seeds=[0, 1], steps=2)
    assert curve.images.shape == (2, 2, 2, 3, 64, 64)
    verdict = judge_images(judge, curve.images[0].reshape(-1, 3, 64, 64) * 2 - 1)["colour"]["predicted"].view(2, 2)
    red = judge.HEADS["colour"].index("red")
    verdict2 = judge_images(judge, curve.images[1].reshape(-1, 3, 64, 64) * 2 - 1)["colour"]["predicted"].view(2, 2)
    blue = judge.HEADS["colour"].index("blue")
    expected = ((verdict == red).float().sum(0) + (verdict2 == blue).float().sum(0)) / 4  # per scale
    assert curve.adherence["colour"] == pytest.approx(expected.tolist())
    assert all(a <= min(curve.adherence[k][i] for k in ("colour", "shape")) for i, a in enumerate(curve.adherence["all"]))
    assert all(d > 0 for d in curve.diversity)  # different seeds, different images


def test_adherence_needs_a_checkable_prompt(tiny_pipe):
    from sdexplain.toy.model import Judge

    with pytest.raises(ValueError, match="names no colour, shape or position"):
        guidance.adherence_and_diversity(tiny_pipe, Judge.load(), ["a photo"], [1.0], seeds=[0, 1], steps=1)


def test_entropy_bits():
    assert guidance.entropy_bits([5, 0, 0]) == 0.0
    assert guidance.entropy_bits([3, 3]) == pytest.approx(1.0)
    assert guidance.entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert guidance.entropy_bits([2, 1, 1]) == pytest.approx(1.5)
    for bad in ([0, 0], [], [1, -1]):
        with pytest.raises(ValueError, match="non-negative and not all zero"):
            guidance.entropy_bits(bad)


def test_attribute_diversity_counts_what_the_judge_reads_per_scale(tiny_pipe):
    from sdexplain.toy.evaluate import judge_images
    from sdexplain.toy.model import Judge

    judge = Judge.load()
    result = guidance.attribute_diversity(tiny_pipe, judge, "a cat", [0.0, 4.0], seeds=[0, 1, 2], steps=2)
    assert result.images.shape == (2, 3, 3, 64, 64) and result.named == {"shape": "cat"}
    # the images of scale 4 are the sweeps' images, and the counts are the judge's readings of them
    sweep = guidance.cfg_sweep(tiny_pipe, "a cat", [0.0, 4.0], steps=2, seed=1, keep_steps=False, progress=False)
    torch.testing.assert_close(result.images[1, 1], guidance._to_judge_range(sweep.images[1:])[0] / 2 + 0.5)
    for i in range(2):
        verdict = judge_images(judge, result.images[i] * 2 - 1)
        for name in ("colour", "shape", "position", "size"):
            read = [result.labels[name][int(k)] for k in verdict[name]["predicted"]]
            assert result.counts[name][i].sum() == 3
            assert result.distinct(name)[i] == len(set(read))
            expected = [read.count(value) for value in result.labels[name]]
            assert result.entropy(name)[i] == pytest.approx(guidance.entropy_bits(expected))
        cats = [result.labels["shape"][int(k)] for k in verdict["shape"]["predicted"]].count("cat")
        assert result.adherence("shape")[i] == pytest.approx(cats / 3)
        sizes = [result.labels["size"][int(k)] for k in verdict["size"]["predicted"]]
        assert result.value_counts("size")[i] == {value: sizes.count(value) for value in result.labels["size"]}
    with pytest.raises(ValueError, match="names no colour"):
        result.adherence("colour")
    with pytest.raises(ValueError, match="attribute must be one of .*got 'weight'"):
        result.value_counts("weight")
    with pytest.raises(ValueError, match="at least two seeds"):
        guidance.attribute_diversity(tiny_pipe, judge, "a cat", [1.0], seeds=[0], steps=1)


def test_classifier_guidance_curve_records_per_scale_results(tiny_pipe):
    from sdexplain.toy.extras import NoisyLatentClassifier
    from sdexplain.toy.model import Judge

    torch.manual_seed(0)
    classifier = NoisyLatentClassifier().eval()
    curve = guidance.classifier_guidance_curve(tiny_pipe, classifier, Judge.load(), "cat", [0.0, 20.0], n=3, steps=2)
    assert len(curve.share) == len(curve.confidence) == 2 and all(0 <= s <= 1 for s in curve.share)
    _, plain = guidance.classifier_guided_sample(tiny_pipe, classifier, 0, 0.0, n=3, steps=2)
    assert curve.confidence[0] == pytest.approx(float(plain[-1].mean()))
    assert curve.confidence[1] > curve.confidence[0]  # the gradient pushes p(cat | x_t) up
    with pytest.raises(ValueError, match="not a label"):
        guidance.classifier_guidance_curve(tiny_pipe, classifier, Judge.load(), "horse", [1.0])


def test_sweep_results_feed_the_cfg_explorer(tiny_pipe):
    from sdexplain.widgets import CfgExplorer

    sweep = guidance.cfg_sweep(tiny_pipe, "a red cat", scales=[1.0, 3.0], steps=2, progress=False)
    results = guidance.sweep_results(sweep)
    view = CfgExplorer(results)
    view.scale_slider.value = 1
    view.step_slider.value = 1
    uncond, cond, guided = view.noises(1, 1)
    assert torch.equal(guided, sweep.noise_guided(1)[1])
    assert torch.equal(cond, sweep.noise_cond[1][1])
    assert not view.errors


def test_sweep_sampler_reports_progress_and_matches_a_direct_sweep(tiny_pipe):
    reports = []
    run = widgets.sweep_sampler(tiny_pipe, [0.0, 3.0], steps=3, seed=5)
    sweep = run("a red cat", lambda done, total: reports.append((done, total)))
    direct = guidance.cfg_sweep(tiny_pipe, "a red cat", [0.0, 3.0], steps=3, seed=5, progress=False)
    assert reports[:3] == [(1, 3), (2, 3), (3, 3)] and set(reports[3:]) <= {(3, 3)}, reports  # PNDM: one extra call
    for a, b in zip(sweep.images, direct.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="steps"):
        widgets.sweep_sampler(tiny_pipe, [1.0], steps=0)


def test_negative_prompt_takes_the_unconditional_place_and_is_judged(tiny_pipe):
    from sdexplain.generate import generate
    from sdexplain.toy.evaluate import judge_images
    from sdexplain.toy.model import Judge

    judge = Judge.load()
    effect = guidance.negative_prompt_effect(tiny_pipe, judge, "a cat", "red", n=3, steps=2, cfg=3.0, seed=0)
    assert (effect.attribute, effect.value) == ("colour", "red") and len(effect.images_with) == 3
    red = list(judge.HEADS["colour"]).index("red")
    verdict = judge_images(judge, guidance._to_judge_range(effect.images_with))["colour"]
    assert effect.share_with == pytest.approx(float((verdict["predicted"] == red).float().mean()))
    assert effect.probability_with == pytest.approx(float(verdict["probs"][:, red].mean()))
    # same seed: the first step sees the same latent and the same conditional noise; only the
    # unconditional half changes, to the negative prompt's prediction
    _, plain = generate(tiny_pipe, "a cat", steps=2, cfg=3.0, seed=0, num_images=3, attention=False, preview_every=0)
    first, plain_first = effect.run_with.steps[0], plain.steps[0]
    torch.testing.assert_close(first.latent_in, plain_first.latent_in)
    torch.testing.assert_close(first.noise_cond, plain_first.noise_cond)
    assert not torch.allclose(first.noise_uncond, plain_first.noise_uncond)
    torch.testing.assert_close(first.noise_guided, first.noise_uncond + 3.0 * (first.noise_cond - first.noise_uncond), rtol=1e-4, atol=1e-5)


def test_negative_prompt_must_name_one_attribute(tiny_pipe):
    from sdexplain.toy.model import Judge

    with pytest.raises(ValueError, match="exactly one"):
        guidance.negative_prompt_effect(tiny_pipe, Judge.load(), "a cat", "ugly", n=1, steps=1)


def test_negative_prompt_places_reads_the_same_seeds_with_and_without(tiny_pipe):
    from sdexplain.generate import generate
    from sdexplain.toy.evaluate_pairs import read_places
    from sdexplain.toy.model import Judge

    judge = Judge.load()
    effect = guidance.negative_prompt_places(tiny_pipe, judge, "a red cat on the left and a blue dog on the right", "dog", n=2, steps=2, cfg=3.0, seed=0)
    plain, _ = generate(tiny_pipe, "a red cat on the left and a blue dog on the right", steps=2, cfg=3.0, seed=0, num_images=2, attention=False, preview_every=0)
    assert [p.tobytes() for p in effect.images_without] == [p.tobytes() for p in plain]  # without = plain CFG, same seed
    assert effect.readings_with == read_places(judge, guidance._to_judge_range(effect.images_with))
    assert effect.objects_per_picture("with") == [len(r) for r in effect.readings_with]
    with pytest.raises(ValueError, match="non-empty"):
        guidance.negative_prompt_places(tiny_pipe, judge, "a cat", "  ", n=1, steps=1)


def test_negative_prompt_places_counts_and_fate():
    def reading(**places):
        return {place: dict(zip(("shape", "colour", "size"), value.split())) for place, value in places.items()}

    effect = guidance.NegativePromptPlaces(
        "p", "dog", [], [],
        readings_without=[reading(left="cat red large", right="dog blue small"), reading(left="cat red large", right="dog blue large"), reading(top="dog green small")],
        readings_with=[reading(left="cat red large", right="dog blue small"), reading(left="cat red large", right="circle blue large"), reading(bottom="cat red small")],
    )
    assert effect.count("without", shape="dog") == 3 and effect.count("with", shape="dog") == 1
    assert effect.count("with", shape="cat", colour="red", place="left") == 2 and effect.count("with") == 5
    assert effect.objects_per_picture("without") == [2, 2, 1]
    assert effect.fate("dog") == {"blue circle": 1, "blue dog": 1, "nothing": 1}
    with pytest.raises(ValueError, match="'without' or 'with'"):
        effect.count("both")
