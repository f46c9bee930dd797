import time

import numpy as np
import pytest
import torch

from sdexplain.toy import world


def test_same_seed_same_batch_and_different_seed_differs():
    a, b, c = world.batch(16, seed=3), world.batch(16, seed=3), world.batch(16, seed=4)
    assert torch.equal(a["images"], b["images"]) and a["captions"] == b["captions"]
    assert not torch.equal(a["images"], c["images"])


def test_batch_shapes_and_ranges():
    data = world.batch(8, seed=0)
    assert data["images"].shape == (8, 3, 64, 64)
    assert data["images"].min() >= -1 and data["images"].max() <= 1
    assert data["masks"].shape == (8, 64, 64) and data["masks"].dtype == torch.bool
    assert data["depths"].shape == (8, 64, 64)
    assert set(data["labels"]) == {"shape", "colour", "position", "size"}


def test_caption_grammar():
    scene = world.make_scene("cat", "red", "left", "large")
    assert scene.caption() == "a large red cat on the left"
    assert world.make_scene("square", "blue", "top", "small").caption() == "a small blue square at the top"
    assert world.make_scene("dog", "green", "center", "small").caption() == "a small green dog in the center"
    assert world.parse_caption("a large red cat on the left") == {"shape": "cat", "colour": "red", "position": "left", "size": "large"}


def test_captions_drop_words_sometimes_but_always_name_the_shape():
    captions = world.batch(400, seed=1)["captions"]
    full = sum(len(c.split()) == len(world.make_scene("cat", "red", "left", "large").caption().split()) for c in captions)
    assert 0.5 * len(captions) < full < len(captions)  # ~73 % full at a 10 % drop rate per attribute
    assert all(world.parse_caption(c)["shape"] is not None for c in captions)


def test_object_is_drawn_in_its_colour_where_its_mask_is():
    scene = world.make_scene("circle", "blue", "center", "large")
    image, mask, depth = world.render(scene)
    assert mask[32, 32] and not mask[0, 0]
    assert tuple(image[32, 32]) == world.COLOURS["blue"]
    assert tuple(image[0, 0]) == world.BACKGROUND
    assert depth[32, 32] > depth[0, 0]  # the object is nearer than the floor behind it


def test_position_words_place_the_object():
    for position, ((cx, cy), _) in world.POSITIONS.items():
        _, mask, _ = world.render(world.make_scene("square", "red", position, "small"))
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - cx) < 1.5 and abs(ys.mean() - cy) < 1.5


def test_cats_and_dogs_differ_in_their_ears():
    cat = world.render(world.make_scene("cat", "red", "center", "large"))[1]
    dog = world.render(world.make_scene("dog", "red", "center", "large"))[1]
    assert cat[21, 25] and not dog[21, 25]  # a pointed ear above the head
    assert dog[36, 21] and not cat[36, 21]  # a floppy ear beside the head


def test_unknown_attribute_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown colour 'pink'.*red"):
        world.make_scene("cat", "pink", "left", "large")


def test_a_batch_of_64_is_fast():
    world.batch(64, seed=0)  # warm the mask cache
    start = time.perf_counter()
    world.batch(64, seed=1)
    assert time.perf_counter() - start < 0.5  # typically ~10 ms; generous for a loaded CI machine


def test_mislabel_names_wrong_values_at_the_given_rate_and_never_redraws():
    scene = world.make_scene("cat", "red", "left", "large")
    rng = np.random.default_rng(0)
    assert world.mislabel(scene, rng, 0.0) == scene
    always = world.mislabel(scene, rng, 1.0)
    assert (always.shape, always.colour, always.position, always.size) != (scene.shape, scene.colour, scene.position, scene.size)
    assert all(getattr(always, a) != getattr(scene, a) for a in ("shape", "colour", "position", "size"))
    assert (always.cx, always.cy, always.radius) == (scene.cx, scene.cy, scene.radius)  # only the names change
    draws = [world.mislabel(scene, rng, 0.3) for _ in range(4000)]
    for attribute in ("shape", "colour", "position", "size"):
        wrong = np.mean([getattr(d, attribute) != getattr(scene, attribute) for d in draws])
        assert 0.27 < wrong < 0.33, (attribute, wrong)
    colours = {d.colour for d in draws if d.colour != "red"}
    assert colours == set(world.COLOUR_NAMES) - {"red"}  # every other value is drawn


def test_mislabel_rate_outside_zero_one_is_a_clear_error():
    with pytest.raises(ValueError, match=r"caption noise rate must be in \[0, 1\], got 1.5"):
        world.mislabel(world.make_scene("cat", "red", "left", "large"), np.random.default_rng(0), 1.5)


def test_crude_drawing_is_a_flat_stroked_cat_unlike_the_world_renders():
    drawing = world.crude_drawing("orange")
    assert drawing.shape == (world.IMAGE_SIZE, world.IMAGE_SIZE, 3) and drawing.dtype == np.uint8
    colours = {tuple(c) for c in drawing.reshape(-1, 3)}
    assert colours <= {(255, 255, 255), world.COLOURS["orange"], world.DETAIL}  # flat strokes: paper, ink, dots
    ink = (drawing == world.COLOURS["orange"]).all(-1)
    assert 0.05 < ink.mean() < 0.3  # outlines, not filled shapes
    assert not (drawing == world.BACKGROUND).all(-1).any()  # white paper, not the world's background
    with pytest.raises(ValueError, match="unknown colour"):
        world.crude_drawing("pink")


# ----------------------------------------------------------------------------- world v2


def test_v2_pairs_draw_both_objects_each_in_its_own_mask():
    pair = world.Pair(world.make_scene("cat", "red", "left", "large"), world.make_scene("dog", "blue", "right", "small"))
    assert pair.caption() == "a large red cat on the left and a small blue dog on the right"
    image, mask, _ = world.render(pair)
    masks = world.object_masks(pair)
    assert masks.shape == (2, 64, 64) and not (masks[0] & masks[1]).any()
    assert np.array_equal(masks[0] | masks[1], mask)
    assert masks[0][:, :32].sum() == masks[0].sum() and masks[1][:, 32:].sum() == masks[1].sum()  # left, right
    body_left, _, _ = world.parts(pair.first)
    body_right, _, _ = world.parts(pair.second)
    assert (image[body_left] == world.COLOURS["red"]).all() and (image[body_right] == world.COLOURS["blue"]).all()
    assert world.detail_mask(pair).sum() == world.parts(pair.first)[2].sum() + world.parts(pair.second)[2].sum()


def test_v2_pair_places_must_be_a_pair():
    with pytest.raises(ValueError, match="left/right or top/bottom.*got left/top"):
        world.Pair(world.make_scene("cat", "red", "left", "large"), world.make_scene("dog", "blue", "top", "small"))


def test_v2_batch_mixes_singles_and_pairs_with_synonyms_and_parses_back():
    data = world.batch(400, seed=2, spec=world.V2)
    pairs = [s for s in data["scenes"] if isinstance(s, world.Pair)]
    assert 0.4 < len(pairs) / 400 < 0.6
    assert "labels" not in data  # one object's labels mean nothing for a pair
    assert torch.equal(data["slots"]["present"].sum(1), torch.tensor([len(s.objects) for s in data["scenes"]]))
    words = {w for c in data["captions"] for w in c.split()}
    assert {"kitty", "puppy", "crimson", "scarlet", "navy", "big", "little", "ball", "and"} <= words
    for scene, caption in zip(data["scenes"], data["captions"]):
        read = world.parse_objects(caption)
        assert len(read) == len(scene.objects)
        for obj, named in zip(scene.objects, read):
            assert named["shape"] == obj.shape
            assert named["colour"] in (obj.colour, None) and named["size"] in (obj.size, None)
            assert named["position"] == obj.position or (named["position"] is None and isinstance(scene, world.Scene))


def test_v2_same_shape_pairs_and_both_pair_places_occur():
    scenes = world.sample_scenes(400, seed=5, spec=world.V2)
    pairs = [s for s in scenes if isinstance(s, world.Pair)]
    assert any(p.first.shape == p.second.shape for p in pairs)
    assert {frozenset((p.first.position, p.second.position)) for p in pairs} == {frozenset(("left", "right")), frozenset(("top", "bottom"))}
    assert any(p.first.position == "right" for p in pairs) and any(p.first.position == "left" for p in pairs)  # either order


def test_v2_mislabel_keeps_a_pairs_places():
    rng = np.random.default_rng(0)
    pair = world.Pair(world.make_scene("cat", "red", "left", "large"), world.make_scene("dog", "blue", "right", "small"))
    named = [world.mislabel(pair, rng, rate=1.0) for _ in range(20)]
    assert all((n.first.position, n.second.position) == ("left", "right") for n in named)
    assert all(n.first.shape != "cat" and n.second.colour != "blue" for n in named)


def test_v1_world_is_unchanged_by_v2():
    assert world.sample_scenes(50, seed=9) == world.sample_scenes(50, seed=9, spec=world.V1)
    assert all(isinstance(s, world.Scene) for s in world.sample_scenes(200, seed=9))
    assert "and" not in world.all_words() and "kitty" not in world.all_words()
    assert set(world.all_words()) < set(world.all_words(world.V2))


def test_vary_floor_recolours_only_the_floor_of_the_chosen_share():
    data = world.batch(64, seed=5, spec=world.V2)
    images, masks = data["images"], data["masks"]
    varied = world.vary_floor(images, masks, 0.5, seed=1)
    changed = (varied != images).flatten(1).any(1)
    assert 16 <= int(changed.sum()) <= 48  # about half of 64
    assert torch.equal(varied.permute(0, 2, 3, 1)[masks], images.permute(0, 2, 3, 1)[masks])  # objects untouched
    for i in torch.nonzero(changed).flatten().tolist():  # each chosen floor is one flat colour, unlike the world's
        floor = varied[i].permute(1, 2, 0)[~masks[i]]
        assert torch.equal(floor.amin(0), floor.amax(0))
    assert torch.equal(world.vary_floor(images, masks, 0.5, seed=1), varied)  # deterministic in the seed
    assert world.vary_floor(images, masks, 0.0, seed=1) is images  # world 1's recipe draws nothing
    assert world.V1.floor_variety == 0.0 and world.V2.floor_variety > 0
    with pytest.raises(ValueError, match="1.5"):
        world.vary_floor(images, masks, 1.5, seed=1)
