"""The toy model's tokenizer: a real `CLIPTokenizer`, built offline from our own vocabulary.

CLIP conventions are kept so the article's tokenizer story holds on the toy too: lower-case
text, byte-level BPE with `</w>` marking the end of a word, a start token and an end token as the
two last ids (CLIP's are 49406 and 49407), the end token doubling as padding, and
`model_max_length = 77` — 75 usable tokens between start and end.

The vocabulary is every byte-level character (alone and as a word end), so any text can be
tokenized, plus one token per word of the toy world's caption grammar. Merges are generated so
that each of those words becomes exactly one token; anything else falls apart into characters.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer

from sdexplain.toy.world import all_words

START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


@lru_cache(maxsize=1)
def _byte_chars() -> list[str]:
    """GPT-2 / CLIP's reversible byte -> printable unicode character table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE: repeatedly merge the adjacent pair with the lowest rank."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        pairs = [(rank, i) for rank, i in pairs if rank is not None]
        if not pairs:
            break
        _, i = min(pairs)
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) such that every word in `words` is a single token."""
    tokens = list(_byte_chars()) + [c + "</w>" for c in _byte_chars()]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        pieces = _apply_merges(pieces, ranks)
        while len(pieces) > 1:  # add the leftmost missing merge until the word is whole
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            tokens.append(pair[0] + pair[1])
            pieces = _apply_merges(pieces, ranks)
    tokens = list(dict.fromkeys(tokens)) + [START, END]  # start/end are the last ids, as in CLIP
    vocab = {token: i for i, token in enumerate(tokens)}
    return vocab, merges


def build_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A CLIPTokenizer for the toy world's caption grammar (or for `words`), made offline."""
    vocab, merges = build_vocab(sorted(words or all_words()))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
