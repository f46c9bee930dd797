"""World v2's measures (`sdexplain.toy.evaluate_pairs`), each against ground truth it did not compute."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sdexplain.toy import evaluate, evaluate_pairs, model as toy_model, world
from sdexplain.toy.tokenizer import build_tokenizer
from sdexplain.toy.train_common import read_stage

CRISP_STAGE = Path(__file__).resolve().parents[1] / "toy-stages" / "v2" / "judge_crisp.safetensors"
CAT_L = world.make_scene("cat", "red", "left", "large", np.random.default_rng(0))
DOG_R = world.make_scene("dog", "blue", "right", "small", np.random.default_rng(1))
PAIR = world.Pair(CAT_L, DOG_R)


def reading(**places):
    return {place: dict(zip(("shape", "colour", "size"), value.split())) for place, value in places.items()}


def test_score_pair_right_swapped_missing_and_extra():
    right = evaluate_pairs.score_pair(PAIR, reading(left="cat red large", right="dog blue small"))
    assert right == {"place": True, "shape": True, "colour": True, "both": True, "swapped": False, "extra": False}
    swapped = evaluate_pairs.score_pair(PAIR, reading(left="cat blue large", right="dog red small"))
    assert swapped["swapped"] and not swapped["colour"] and swapped["shape"] and not swapped["both"]
    one_missing = evaluate_pairs.score_pair(PAIR, reading(left="cat red large", center="dog blue small"))
    assert not one_missing["place"] and not one_missing["both"] and one_missing["extra"]
    same_colour = world.Pair(CAT_L, world.make_scene("dog", "red", "right", "small", np.random.default_rng(1)))
    assert not evaluate_pairs.score_pair(same_colour, reading(left="cat red large", right="dog red small"))["swapped"]


def test_synonym_caption_changes_every_word_with_a_synonym_and_nothing_else():
    rng = np.random.default_rng(0)
    caption = evaluate_pairs.synonym_caption(PAIR, rng)
    assert caption is not None and caption != PAIR.caption()
    for canonical, synonym in zip(PAIR.caption().split(), caption.split()):
        assert (synonym != canonical) == (canonical in world.SYNONYMS)
        assert world.CANONICAL.get(synonym, synonym) == canonical
    plain = world.make_scene("square", "green", "center", "small", rng)  # only "small" has a synonym
    assert evaluate_pairs.synonym_caption(plain, rng) == "a little green square in the center"


@pytest.fixture(scope="module")
def crisp_judge():
    judge = toy_model.SlotJudge()
    judge.load_state_dict(read_stage(CRISP_STAGE)[0]["model"])
    return judge.eval()


def test_read_places_on_renders_matches_the_world_ground_truth(crisp_judge):
    pairs = evaluate.held_out_pairs(64) + evaluate.held_out_scenes(64)
    renders = world.to_tensor(np.stack([world.render(s)[0] for s in pairs]))
    for scene, found in zip(pairs, evaluate_pairs.read_places(crisp_judge, renders)):
        truth = {o.position: {"shape": o.shape, "colour": o.colour, "size": o.size} for o in scene.objects}
        assert found == truth
    with pytest.raises(TypeError, match="SlotJudge"):
        evaluate_pairs.read_places(toy_model.Judge(), renders)


def test_read_shapes_names_every_object_at_its_place_with_the_judges_probability(crisp_judge):
    scenes = evaluate.held_out_pairs(32) + evaluate.held_out_scenes(32)
    renders = world.to_tensor(np.stack([world.render(s)[0] for s in scenes]))
    readings = evaluate_pairs.read_shapes(crisp_judge, renders)
    for scene, found, places in zip(scenes, readings, evaluate_pairs.read_places(crisp_judge, renders)):
        truth = sorted((o.position, o.shape) for o in scene.objects)
        assert sorted((place, shape) for place, shape, _ in found) == truth
        assert [place for place, _, _ in found] == list(places)  # the same places as read_places, in its order
        assert all(0.2 <= p <= 1.0 for _, _, p in found)  # a probability of the top one of five shapes
    blank = torch.ones(1, 3, 64, 64) * torch.tensor(world.BACKGROUND).view(1, 3, 1, 1) / 127.5 - 1  # the empty floor
    assert evaluate_pairs.read_shapes(crisp_judge, blank) == [[]]
    with pytest.raises(TypeError, match="SlotJudge"):
        evaluate_pairs.read_shapes(toy_model.Judge(), renders)


def test_object_masks_from_picture_are_the_rendered_objects():
    for pair in evaluate.held_out_pairs(20):
        picture = world.render(pair)[0]
        masks = evaluate_pairs.object_masks_from_picture(picture, pair)
        truth = world.object_masks(pair)
        for got, want in zip(masks, truth):  # the object's pixels (its near-floor dark shade aside)
            assert (got & want).sum() / want.sum() > 0.9 and (got & ~want).sum() == 0
    lone = world.render(CAT_L)[0]
    assert evaluate_pairs.object_masks_from_picture(lone, PAIR) is None  # nothing on the right


def test_embedding_neighbours_finds_planted_partners_and_refuses_other_vocabularies():
    tokenizer = build_tokenizer(world.all_words(world.V2))
    encoder = toy_model.make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    table = encoder.get_input_embeddings().weight
    torch.manual_seed(0)
    with torch.no_grad():
        table.normal_()
        kitty = tokenizer("kitty", add_special_tokens=False)["input_ids"][0]
        cat = tokenizer("cat", add_special_tokens=False)["input_ids"][0]
        table[kitty] = table[cat] + 0.01 * torch.randn(table.shape[1])  # planted: kitty ≈ cat
    found = {n.word: n for n in evaluate_pairs.embedding_neighbours(tokenizer, encoder)}
    assert found["kitty"].nearest == "cat" and found["kitty"].partner and found["kitty"].cosine > 0.99
    assert found["cat"].nearest == "kitty"
    assert sum(n.partner for n in found.values()) < len(found)  # random rows: most words have no partner nearest
    with pytest.raises(ValueError, match="tokens in this tokenizer"):
        evaluate_pairs.embedding_neighbours(build_tokenizer(world.all_words()), encoder)


def test_pair_word_attention_assigns_words_to_their_object_and_scores_planted_maps():
    masks = world.object_masks(PAIR)  # (2, 64, 64): the cat on the left, the dog on the right
    caption = PAIR.caption().split()  # a large red cat on the left and a small blue dog on the right
    left, right = torch.zeros(8, 8), torch.zeros(8, 8)
    left[:, :4], right[:, 4:] = 1.0, 1.0
    planted = {"cat": left, "dog": right, "red": right}  # "red" planted on the wrong object
    maps = {f"{i + 1}:{w}": planted.get(w, torch.ones(8, 8)) for i, w in enumerate(caption)}

    class Attention:
        def word_maps(self, batch_index=0, step=None):
            return maps

    run = type("Run", (), {"attention": Attention()})()
    rows = {r.word: r for r in evaluate_pairs.pair_word_attention(run, PAIR, masks) if r.word in ("cat", "dog", "red", "blue")}
    assert [rows[w].owner for w in ("red", "cat", "blue", "dog")] == [0, 0, 1, 1]
    assert rows["cat"].score > 100 and rows["dog"].score > 100  # all mass on its own object, none on the other
    assert rows["red"].score < 0.01 and abs(rows["blue"].score - 1) < 1e-6  # the wrong object; a uniform map
    assert "and" not in {r.word for r in evaluate_pairs.pair_word_attention(run, PAIR, masks)}


def test_object_read_right_needs_its_place_shape_and_colour_not_its_size():
    assert evaluate_pairs.object_read_right(CAT_L, reading(left="cat red small", right="dog blue small"))  # size aside
    assert not evaluate_pairs.object_read_right(CAT_L, reading(right="cat red large"))  # not at its place
    assert not evaluate_pairs.object_read_right(CAT_L, reading(left="dog red large"))
    assert not evaluate_pairs.object_read_right(CAT_L, reading(left="cat blue large"))
    for r in (reading(left="cat red large", right="dog blue small"), reading(left="cat blue large", right="dog red small")):
        both = all(evaluate_pairs.object_read_right(o, r) for o in PAIR.objects)
        assert both == evaluate_pairs.score_pair(PAIR, r)["both"]  # agrees with score_pair's "both"


def test_pair_from_prompt_reads_both_objects_in_order_and_refuses_what_it_cannot():
    pair = evaluate_pairs.pair_from_prompt("a blue puppy on the right and a small crimson cat on the left")
    assert [(o.shape, o.colour, o.position, o.size) for o in pair.objects] == [("dog", "blue", "right", "large"), ("cat", "red", "left", "small")]
    with pytest.raises(ValueError, match="two phrases|'and'"):
        evaluate_pairs.pair_from_prompt("a red cat on the left")
    with pytest.raises(ValueError, match="no colour"):
        evaluate_pairs.pair_from_prompt("a cat on the left and a blue dog on the right")
    with pytest.raises(ValueError, match="left/right"):  # two places that are not a pair's
        evaluate_pairs.pair_from_prompt("a red cat on the left and a blue dog at the top")


def test_exchange_places_moves_each_object_whole_to_the_other_place():
    moved = evaluate_pairs.exchange_places(PAIR)
    assert [(o.shape, o.colour, o.size, o.position) for o in moved.objects] == [("cat", "red", "large", "right"), ("dog", "blue", "small", "left")]
    found = reading(left="dog blue small", right="cat red large")
    assert evaluate_pairs.score_pair(moved, found)["both"] and not evaluate_pairs.score_pair(PAIR, found)["shape"]


def test_swap_colours_exchanges_the_colours_and_nothing_else():
    swapped = evaluate_pairs.swap_colours(PAIR)
    assert (swapped.first.colour, swapped.second.colour) == ("blue", "red")
    assert swapped.caption() == PAIR.caption().replace("red", "@").replace("blue", "red").replace("@", "blue")


@pytest.fixture(scope="module")
def v2_encoder_pipe():
    """A world-2 tokenizer and an untrained text encoder: enough for the text transformer's measures."""
    tokenizer = build_tokenizer(world.all_words(world.V2))
    torch.manual_seed(0)
    encoder = toy_model.make_text_encoder(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id).eval()
    return type("Pipe", (), {"tokenizer": tokenizer, "text_encoder": encoder})()


def test_phrase_slots_are_the_words_positions_in_the_caption(v2_encoder_pipe):
    caption = PAIR.caption()  # a large red cat on the left and a small blue dog on the right
    words = caption.split()
    slots = evaluate_pairs.phrase_slots(v2_encoder_pipe.tokenizer, caption)
    and_at = words.index("and")
    for k, (start, stop) in enumerate(((0, and_at), (and_at + 1, len(words)))):
        for role, word in (("size", PAIR.objects[k].size), ("colour", PAIR.objects[k].colour), ("shape", PAIR.objects[k].shape)):
            assert slots[k][role] == start + words[start:stop].index(word) + 1  # +1: the start token is slot 0
    assert slots[0]["position"] == words.index("left") + 1 and slots[1]["position"] == words.index("right") + 1
    with pytest.raises(ValueError, match="two phrases"):
        evaluate_pairs.phrase_slots(v2_encoder_pipe.tokenizer, "a red cat on the left")


def test_noun_colour_attention_reads_the_eager_attention_weights_at_the_nouns_rows(v2_encoder_pipe):
    prompt = "a red cat on the left and a blue dog on the right"
    rows = evaluate_pairs.noun_colour_attention(v2_encoder_pipe, [prompt])
    assert [(r.noun, r.colour, r.other_colour) for r in rows] == [("cat", "red", "blue"), ("dog", "blue", "red")]
    encoder = v2_encoder_pipe.text_encoder  # the outside reference: transformers' own weights ("eager")
    eager = type(encoder)(encoder.config)
    eager.load_state_dict(encoder.state_dict())
    eager.config._attn_implementation = "eager"
    ids = v2_encoder_pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        mean = torch.stack([a[0].mean(0) for a in eager(ids, output_attentions=True).attentions]).mean(0)  # (77, 77)
    red, cat, blue, dog = 2, 3, 9, 10  # slots: <start> a red cat on the left and a blue dog …
    expected = [(mean[cat, red], mean[cat, blue]), (mean[dog, blue], mean[dog, red])]
    for row, (own, other) in zip(rows, expected):
        assert row.own == pytest.approx(float(own), abs=1e-5) and row.other == pytest.approx(float(other), abs=1e-5)
    assert rows[0].other == 0.0  # the first noun cannot see the later colour word (causal mask)


def test_colour_slot_swap_runs_every_swap_and_reports_shares():
    from sdexplain.loading import load_pipeline

    pipe = load_pipeline("toy")
    pipe.set_progress_bar_config(disable=True)
    result = evaluate_pairs.colour_slot_swap(pipe, toy_model.SlotJudge.load(), n=3, steps=4)
    assert result["pictures"] == 3 and len(result["pairs"]) == 3
    names = ("mixed", "plain_a", "plain_b", *evaluate_pairs.SWAPS)
    assert {name: tuple(images.shape) for name, images in result["images"].items()} == {name: (3, 3, 64, 64) for name in names}
    assert set(result["swaps"]) == set(evaluate_pairs.SWAPS)
    for shares in [*result["swaps"].values(), {"a": result["plain_a"], "b": result["plain_b"]}]:
        assert all(0.0 <= shares[k] <= 1.0 for k in ("a", "b")) and shares["a"] + shares["b"] <= 1.0  # a picture cannot follow both
    for shares in result["swaps"].values():
        assert np.isnan(shares["kept"]) or shares["kept"] + shares["moved"] <= 1.0  # A's shapes kept or exchanged, not both
    assert (result["follow_colour_slots"], result["follow_the_rest"]) == (result["swaps"]["colour"]["b"], result["swaps"]["colour"]["a"])
    assert torch.equal(result["images"]["mixed"], result["images"]["colour"])


def test_colour_or_neighbour_reads_the_nouns_row_by_distance(v2_encoder_pipe, monkeypatch):
    """Planted self-attention: the noun gives 0.5 to the word next to it and 0.1 to the one before, and 0.2
    more to a colour word wherever it stands; the function must read the weights by word and distance."""
    from sdexplain import tokens

    def planted(pipe, prompt):
        words = prompt.split()  # a w1 w2 noun
        weights = torch.zeros(2, 6, 6)
        weights[:, 4, 3] = 0.5 + (0.2 if words[2] in world.COLOURS else 0.0)  # next to the noun; a colour gets 0.2 more
        weights[:, 4, 2] = 0.1 + (0.2 if words[1] in world.COLOURS else 0.0)  # two back
        return tokens.TextSelfAttention(weights=weights, labels=["<s>", "a", words[1], words[2], words[3], "<e>"])

    monkeypatch.setattr(tokens, "text_self_attention", planted)
    found = evaluate_pairs.colour_or_neighbour(v2_encoder_pipe)
    assert found["n"] == len(world.SHAPES) * len(world.COLOUR_NAMES) * len(world.SIZE_NAMES)
    assert found["colour_1"] == pytest.approx(0.7) and found["size_1"] == pytest.approx(0.5)
    assert found["colour_2"] == pytest.approx(0.3) and found["size_2"] == pytest.approx(0.1)
    assert found["colour_over_size_1"] == found["colour_over_size_2"] == found["near_over_far"] == 1.0


def test_recolour_second_changes_only_the_second_colour_word_and_refuses_bad_colours():
    from sdexplain.loading import load_pipeline

    pipe = load_pipeline("toy")
    pipe.set_progress_bar_config(disable=True)
    judge = toy_model.SlotJudge.load()
    prompt = "a red cat on the left and a blue dog on the right"
    found = evaluate_pairs.recolour_second(pipe, judge, prompt, "green", steps=4)
    assert found["prompts"] == (prompt, "a red cat on the left and a green dog on the right")
    assert [p.second.colour for p in found["pairs"]] == ["blue", "green"] and found["pairs"][0].first == found["pairs"][1].first
    a, b = (np.asarray(image, dtype=np.float32) for image in found["images"])
    assert len(found["pixel_change"]) == 2 and max(found["pixel_change"]) <= float(np.abs(b - a).max())
    assert [w for w, _, _ in found["map_change"]] == [w for w in prompt.split() if w != "and"]
    assert [o for _, o, _ in found["map_change"]] == [0] * 6 + [1] * 6
    assert len(found["readings"]) == 2 and len(found["colour_own_over_other"]) == 2
    with pytest.raises(ValueError, match="already blue"):
        evaluate_pairs.recolour_second(pipe, judge, prompt, "blue")
    with pytest.raises(ValueError, match="colour must be one of"):
        evaluate_pairs.recolour_second(pipe, judge, prompt, "pink")