"""Attention measurements: masks from images, overlap ratios, and the sums the softmax guarantees."""

import numpy as np
import pytest
import torch

from sdexplain import attention_metrics as am
from sdexplain.generate import generate
from sdexplain.toy import world


@pytest.mark.parametrize("shape,colour", [("cat", "yellow"), ("dog", "purple"), ("square", "green"), ("triangle", "orange")])
def test_object_mask_from_the_picture_equals_the_worlds_own_mask(shape, colour):
    image, mask, _ = world.render(world.make_scene(shape, colour, "left", "large"))
    assert np.array_equal(am.object_mask(image), mask)


def test_object_mask_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        am.object_mask(np.zeros((8, 8, 3), np.uint8), threshold=0)


def test_mask_on_grid_is_the_covered_fraction_of_each_cell():
    mask = np.zeros((64, 64), bool)
    mask[:, :16] = True  # left quarter
    grid = am.mask_on_grid(mask, (4, 4))
    assert torch.allclose(grid[:, 0], torch.ones(4)) and torch.allclose(grid[:, 1:], torch.zeros(4, 3))
    mask[:, :8] = False  # now half of the first column of cells
    assert torch.allclose(am.mask_on_grid(mask, (4, 4))[:, 0], torch.full((4,), 0.5))


def test_overlap_ratio_is_one_for_uniform_attention_and_peaks_inside_the_mask():
    mask = np.zeros((64, 64), bool)
    mask[:32, :32] = True  # a quarter of the image
    uniform = am.overlap(torch.ones(8, 8), mask)
    assert uniform.mask_share == pytest.approx(0.25)
    assert uniform.mass_inside == pytest.approx(0.25) and uniform.ratio == pytest.approx(1.0)
    heat = torch.zeros(8, 8)
    heat[:4, :4] = 1.0  # all mass on the object
    assert am.overlap(heat, mask).ratio == pytest.approx(4.0)
    heat = torch.zeros(8, 8)
    heat[4:, 4:] = 1.0  # all mass off the object
    assert am.overlap(heat, mask).ratio == pytest.approx(0.0)
    with pytest.raises(ValueError, match="mask is empty"):
        am.overlap(torch.ones(8, 8), np.zeros((64, 64), bool))
    with pytest.raises(ValueError, match="negative"):
        am.overlap(-torch.ones(8, 8), mask)


@pytest.fixture(scope="module")
def traced():
    from sdexplain.architectures import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    images, run = generate(pipe, ["a red cat on the left", "a blue dog"], steps=3, cfg=3.0, seed=0, height=64, width=64)
    return images, run


def test_stored_maps_still_sum_to_one_per_pixel_over_all_77_slots(traced):
    _, run = traced
    for b in range(2):
        for step in (None, *run.attention.steps):
            mass = am.token_mass(run, b, step)
            assert mass["max error"] < 1e-5
            assert mass["start"] + mass["words"] + mass["end"] + mass["padding"] == pytest.approx(1.0, abs=1e-5)


def test_word_overlaps_cover_every_word_and_the_special_tokens(traced):
    images, run = traced
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    out = am.word_overlaps(run, mask, batch_index=1)
    assert list(out) == ["1:a", "2:blue", "3:dog", "<start>", "<end>"]
    for o in out.values():
        assert 0.0 <= o.mass_inside <= 1.0 and o.mask_share == pytest.approx(0.25)
    assert am.find_position(run, "left", 0) == 6
    per_step = am.overlap_per_step(run, mask, am.find_position(run, "cat", 0), 0)
    assert [s for s, _ in per_step] == run.attention.steps
    # one step's ratio equals the overlap of that step's map, computed directly
    direct = am.overlap(run.attention.token_map(3, 0, run.attention.steps[-1]), mask).ratio
    assert per_step[-1][1] == pytest.approx(direct)
    with pytest.raises(ValueError, match="not a token"):
        am.find_position(run, "triangle", 0)


def test_slot_shares_are_the_kinds_totals_per_slot(traced):
    _, run = traced
    for b in range(2):
        mass, shares = am.token_mass(run, b), am.slot_shares(run, b)
        length = run.attention.lengths[b]
        assert shares["uniform"] == pytest.approx(1 / 77)
        assert shares["word"] == pytest.approx(mass["words"] / (length - 2))
        assert shares["padding"] == pytest.approx(mass["padding"] / (77 - length))
        # independently: the padding slot's share straight from the stored per-step padding maps
        direct = float(torch.stack(run.attention.padding_per_step)[:, b].mean())
        assert shares["padding"] == pytest.approx(direct, rel=1e-5)


def test_word_role_reads_world_2s_synonyms_as_their_canonical_word():
    from sdexplain.attention_metrics import word_role

    assert [word_role(w) for w in ("kitty", "crimson", "big", "ball", "cat", "on")] == ["shape", "colour", "size", "shape", "shape", "other"]
