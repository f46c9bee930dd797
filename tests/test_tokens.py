"""Tokenizer, embedding and text-transformer views read the real tokenizer and text encoder correctly."""

import pytest
import torch

from sdexplain import tokens, widgets
from sdexplain.architectures import ARCHITECTURES
from sdexplain.generate import generate
from sdexplain.toy.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def clip():
    pytest.importorskip("instant_clip_tokenizer")
    from sdexplain.architectures import clip_tokenizer

    return clip_tokenizer()


def test_dreambeach_is_dream_plus_beach_with_clip_start_and_end_ids(clip):
    t = tokens.tokenize(clip, "dreambeach")
    assert t.pieces == ["dream", "beach</w>"]  # the space (end of word) belongs to the last piece
    assert t.words == [["dream", "beach</w>"]]
    assert t.ids[0] == tokens.CLIP_START_ID == 49406
    assert t.ids[3] == tokens.CLIP_END_ID == 49407
    assert t.ids[4:] == [49407] * 73  # SD v1 pads with the end token
    assert [x.role for x in t.tokens[:5]] == ["start", "word", "word", "end", "padding"]
    assert tokens.is_clip_vocabulary(clip)


def test_overlong_prompt_cuts_exactly_what_does_not_fit(clip):
    words = [f"{c}" for c in ("red", "cat", "blue", "dog")] * 25  # 100 single-token words
    t = tokens.tokenize(clip, " ".join(words))
    assert len(t.ids) == 77 and t.length == 77
    assert t.pieces == [w + "</w>" for w in words[:75]]
    assert t.cut == [w + "</w>" for w in words[75:]]
    assert all(x.position is None for x in t.tokens if x.role == "cut")
    # the 77 ids are exactly what the pipeline's own tokenizer call gives
    assert t.ids == clip(" ".join(words), padding="max_length", max_length=77, truncation=True).input_ids


def test_roles_positions_and_text_table_on_the_toy_tokenizer():
    tok = build_tokenizer()
    t = tokens.tokenize(tok, "a red cat zz")
    assert t.pieces == ["a</w>", "red</w>", "cat</w>", "z", "z</w>"]  # unknown word falls apart into characters
    assert t.words[-1] == ["z", "z</w>"]
    assert t.tokens[3].token == "cat</w>" and t.length == 7 and t.cut == []
    assert t.tokens[6].role == "end" and t.tokens[7].role == "padding"
    text = tokens.token_table_text(t)
    assert "'cat</w>'" in text and "5 of 75 usable slots used" in text
    assert "cat&lt;/w&gt;" in tokens.token_table_html(t)  # escaped


def test_inspector_follows_the_text_box():
    view = widgets.TokenInspector(build_tokenizer(), "a red cat")
    assert "red&lt;/w&gt;" in view.table.value
    view.text.value = "a blue dog"
    assert "blue&lt;/w&gt;" in view.table.value and "red&lt;/w&gt;" not in view.table.value
    assert view.tokenization.pieces == ["a</w>", "blue</w>", "dog</w>"]
    assert view.errors == []


def test_reference_tokenizer_prefers_a_clip_vocabulary(tiny_pipe, clip):
    tok, description = tokens.reference_tokenizer(tiny_pipe)  # the tiny pipe has the toy tokenizer
    assert tokens.is_clip_vocabulary(tok) and "instant-clip-tokenizer" in description
    tiny_pipe.tokenizer = clip
    tok, description = tokens.reference_tokenizer(tiny_pipe)
    assert tok is clip and "loaded model" in description


def test_word_vectors_are_rows_of_the_embedding_table_and_neighbours_rank_by_cosine(tiny_pipe):
    table = tiny_pipe.text_encoder.get_input_embeddings().weight
    red, blue, cat = tokens.word_token_ids(tiny_pipe.tokenizer, ["red", "blue", "cat"])
    with torch.no_grad():  # make "blue" a slightly changed copy of "red": it must become red's nearest neighbour
        table[blue] = table[red] + 0.05 * table[red].std() * torch.randn_like(table[red])
    vectors = tokens.word_vectors(tiny_pipe, ["red", "blue", "cat"])
    assert torch.equal(vectors[0], table[red].detach())
    sim = tokens.cosine_matrix(vectors)
    assert torch.allclose(sim.diagonal(), torch.ones(3), atol=1e-6) and torch.allclose(sim, sim.T)
    best = tokens.nearest_neighbours(tiny_pipe, "red", k=3)
    assert best[0][0] == "blue</w>" and best[0][1] > 0.99
    assert all(name != "red</w>" for name, _ in best)
    assert [s for _, s in best] == sorted([s for _, s in best], reverse=True)
    assert len(tokens.nearest_neighbours(tiny_pipe, "red", k=10, candidates=["blue", "cat"])) == 2
    with pytest.raises(ValueError, match="not one"):
        tokens.word_vectors(tiny_pipe, ["dreambeach"])


def test_most_opposite_pairs_are_the_lowest_cosines_above_the_diagonal():
    m = torch.tensor([[1.0, -0.2, 0.3], [-0.2, 1.0, -0.7], [0.3, -0.7, 1.0]])
    assert tokens.most_opposite_pairs(m, ["a", "b", "c"], k=2) == [("b", "c", pytest.approx(-0.7)), ("a", "b", pytest.approx(-0.2))]
    assert len(tokens.most_opposite_pairs(m, ["a", "b", "c"], k=10)) == 3  # only 3 pairs exist
    with pytest.raises(ValueError, match="one word per row"):
        tokens.most_opposite_pairs(m, ["a", "b"])


def test_group_similarity_within_and_between():
    m = torch.tensor([[1.0, 0.8, 0.1, 0.0], [0.8, 1.0, 0.2, 0.1], [0.1, 0.2, 1.0, 0.6], [0.0, 0.1, 0.6, 1.0]])
    out = tokens.group_similarity(m, {"a": [0, 1], "b": [2, 3]})
    assert out["a"] == pytest.approx((0.8, 0.1))
    assert out["b"] == pytest.approx((0.6, 0.1))


def test_group_similarity_leaves_out_the_pairs_it_is_told_to():
    m = torch.tensor([[1.0, 0.9, 0.2], [0.9, 1.0, 0.4], [0.2, 0.4, 1.0]])  # 0 and 1 synonyms, 2 another member
    keep = torch.ones(3, 3, dtype=torch.bool)
    keep[0, 1] = keep[1, 0] = False
    assert tokens.group_similarity(m, {"g": [0, 1, 2]})["g"][0] == pytest.approx((0.9 + 0.2 + 0.4) / 3)
    assert tokens.group_similarity(m, {"g": [0, 1, 2]}, keep=keep)["g"][0] == pytest.approx((0.2 + 0.4) / 2)
    with pytest.raises(ValueError, match="3×3"):
        tokens.group_similarity(m, {"g": [0, 1, 2]}, keep=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="kept pair"):
        tokens.group_similarity(m, {"g": [0, 1]}, keep=keep)


def test_encode_matches_what_the_traced_pipeline_fed_the_unet(tiny_pipe):
    prompt = "a red cat on the left"
    token, hidden = tokens.encode(tiny_pipe, prompt)
    _, run = generate(tiny_pipe, prompt, steps=1, cfg=1.0, seed=0, height=64, width=64, attention=False, preview_every=0)
    assert token.shape == hidden.shape == (1, 77, tiny_pipe.text_encoder.config.hidden_size)
    assert torch.equal(token, run.embeddings.token)
    assert torch.equal(hidden, run.embeddings.hidden)


def test_context_changes_vectors_only_after_the_transformer_and_only_to_the_right(tiny_pipe):
    rows = tokens.context_similarity(tiny_pipe, "a red cat on the left", "a blue cat on the left")
    assert [r.token_a for r in rows][:4] == ["<|startoftext|>", "a</w>", "red</w>", "cat</w>"]
    assert rows[3].token_b == "cat</w>" and rows[3].before == pytest.approx(1.0, abs=1e-6)
    assert rows[3].after < 0.9999  # same word, different context: different vector after the transformer
    assert rows[2].before < 0.9999  # red vs blue differ already in the table
    for r in rows[:2]:  # causal attention: slots left of the change cannot see it
        assert r.after == pytest.approx(1.0, abs=1e-5)


def test_text_encoder_shapes_from_the_sd_configs():
    shapes = tokens.text_encoder_shapes(ARCHITECTURES)
    assert (shapes["sd15"]["tokens"], shapes["sd15"]["width"]) == (77, 768)
    assert (shapes["sd21"]["tokens"], shapes["sd21"]["width"]) == (77, 1024)
    assert shapes["sd15"]["vocabulary"] == 49408


def test_text_self_attention_equals_the_eager_implementation_and_is_causal(tiny_pipe):
    prompt = "a red cat on the left"
    attention = tokens.text_self_attention(tiny_pipe, prompt)
    n = tokens.tokenize(tiny_pipe.tokenizer, prompt).length
    assert attention.labels[:3] == ["<|startoftext|>", "a</w>", "red</w>"] and attention.weights.shape[1:] == (n, n)
    torch.testing.assert_close(attention.weights.sum(-1), torch.ones(attention.weights.shape[:2]))  # rows sum to 1
    assert float(attention.weights.triu(1).abs().max()) == 0.0  # causal: nothing to the right
    # the outside reference: transformers' own attention weights ("eager" returns them)
    encoder = tiny_pipe.text_encoder
    eager = type(encoder)(encoder.config)
    eager.load_state_dict(encoder.state_dict())
    eager.config._attn_implementation = "eager"
    ids = torch.tensor([tokens.tokenize(tiny_pipe.tokenizer, prompt).ids])
    with torch.no_grad():
        reference = eager(ids, output_attentions=True).attentions  # per layer (1, H, 77, 77)
    expected = torch.stack([a[0].mean(0)[:n, :n] for a in reference])
    torch.testing.assert_close(attention.weights, expected, rtol=1e-4, atol=1e-6)
    assert len(tokens.self_attention_figure(attention).axes) == 2
