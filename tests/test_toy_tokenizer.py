from sdexplain.toy.tokenizer import MAX_LENGTH, build_tokenizer
from sdexplain.toy.world import all_words


def test_every_caption_word_is_one_token():
    tokenizer = build_tokenizer()
    for word in all_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == [word + "</w>"]


def test_clip_conventions():
    tokenizer = build_tokenizer()
    assert tokenizer.model_max_length == MAX_LENGTH == 77
    assert tokenizer.bos_token == "<|startoftext|>" and tokenizer.eos_token == "<|endoftext|>"
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (len(tokenizer) - 2, len(tokenizer) - 1)
    ids = tokenizer("A Red CAT", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert tokenizer.convert_ids_to_tokens(ids[:5]) == ["<|startoftext|>", "a</w>", "red</w>", "cat</w>", "<|endoftext|>"]
    assert ids[5:] == [tokenizer.pad_token_id] * 72  # padded with the end token, as CLIP


def test_unknown_words_fall_apart_into_characters():
    tokens = build_tokenizer().tokenize("dreambeach")
    assert "".join(tokens) == "dreambeach</w>" and len(tokens) > 1


def test_saved_tokenizer_round_trips(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = "a small purple triangle at the bottom"
    assert loaded(text).input_ids == tokenizer(text).input_ids


def test_world_v2_words_are_one_token_each():
    from sdexplain.toy.world import V2

    words = all_words(V2)
    tokenizer = build_tokenizer(words)
    for word in words:
        assert tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids) == [word + "</w>"]
