"""Words → token ids → vectors: views of the tokenizer, the token embeddings and the text transformer.

What the prompt goes through before the U-Net sees it (article: tokenizer, embedding, text transformer):

    text ──tokenizer──> 77 token ids ──token embedding──> (77, D) vectors ──transformer──> (77, D) hidden states
                        start, ≤75 word pieces, end, padding      one fixed vector per id      what cross-attention reads

    tokenize(tokenizer, text)        the 77 ids the pipeline feeds the text encoder, each with its role
                                     (start / word / end / padding) and which word it belongs to, plus the
                                     pieces that did not fit ("cut")
    token_table_html / token_table_text   the same as an HTML table (notebook) or plain text (print)
    widgets.TokenInspector(tokenizer) a Text box whose table updates as you type (tokenizing is cheap: no U-Net)
    reference_tokenizer(pipe)        CLIP's real BPE vocabulary if we can have it offline, else the pipeline's
    token_embedding_matrix(pipe)     (V, D): the text encoder's token embedding table
    word_vectors / cosine_matrix / nearest_neighbours / most_opposite_pairs / group_similarity   similarity of token embeddings
    encode(pipe, prompts)            (token embeddings, hidden states), each (B, 77, D) — the hidden states
                                     exactly as `pipe.encode_prompt` hands them to the U-Net
    context_similarity(pipe, a, b)   per position: cosine of the two prompts' vectors before and after the
                                     transformer (same word, different context → same before, different after)
    similarity_figure / context_figure   the two pictures of the notebook

Not here: cross-attention (`sdexplain.attention`), the toy tokenizer's construction (`sdexplain.toy.tokenizer`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import torch
from sdexplain.i18n import Figure  # matplotlib's Figure; its texts follow sdexplain.set_language
from sdexplain.i18n import t as _t  # "t" is the loop name for a token here


END_OF_WORD = "</w>"
CLIP_VOCAB_SIZE = 49408
CLIP_START_ID, CLIP_END_ID = 49406, 49407
ROLES = ("start", "word", "end", "padding", "cut")
_WORD_COLOURS = ("#dbeafe", "#fde68a", "#d1fae5", "#fbcfe8", "#e9d5ff", "#fed7aa")  # alternating per word
_ROLE_COLOURS = {"start": "#e5e7eb", "end": "#e5e7eb", "padding": "#f9fafb", "cut": "#fecaca"}


# ----------------------------------------------------------------------------- tokenizing


@dataclass
class TokenInfo:
    position: int | None  # slot 0..76 the text encoder sees; None for a cut piece
    id: int
    token: str  # the vocabulary string, e.g. "beach</w>" (</w>: a word ends here, the space belongs to it)
    role: str  # one of ROLES
    word: int | None = None  # index of the word this piece belongs to (word pieces and cut pieces)


@dataclass
class Tokenization:
    text: str
    ids: list  # [int] * model_max_length: exactly what the pipeline feeds the text encoder
    tokens: list  # [TokenInfo] one per slot, then one per cut piece
    length: int  # slots up to and including the end token
    slots: int  # usable slots between start and end (75 for CLIP)
    cut: list = field(default_factory=list)  # [str] pieces that did not fit

    @property
    def pieces(self) -> list[str]:
        """The word pieces that were kept (no start, end or padding)."""
        return [t.token for t in self.tokens if t.role == "word"]

    @property
    def words(self) -> list[list[str]]:
        """Kept pieces grouped into words (a word ends with a piece that carries `</w>`)."""
        groups: dict[int, list[str]] = {}
        for t in self.tokens:
            if t.role == "word":
                groups.setdefault(t.word, []).append(t.token)
        return list(groups.values())


def tokenize(tokenizer, text: str) -> Tokenization:
    """`text` as the pipeline tokenizes it (padding to `model_max_length`, truncation), with roles and cut pieces."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    max_length = tokenizer.model_max_length
    # 1. exactly the pipeline's call (StableDiffusionPipeline.encode_prompt)
    ids = tokenizer(text, padding="max_length", max_length=max_length, truncation=True).input_ids  # [int] * 77
    # 2. the same text without the cut: everything beyond the 75 usable slots
    full = tokenizer(text, truncation=False, verbose=False).input_ids  # [start, pieces…, end]
    strings = tokenizer.convert_ids_to_tokens(ids)
    end_id = tokenizer.eos_token_id
    length = ids.index(end_id) + 1 if end_id in ids else len(ids)
    tokens, word = [], 0
    for position, (token_id, token) in enumerate(zip(ids, strings)):
        if position == 0:
            role = "start"
        elif position < length - 1:
            role = "word"
        elif position == length - 1:
            role = "end"
        else:
            role = "padding"
        tokens.append(TokenInfo(position, token_id, token, role, word if role == "word" else None))
        if role == "word" and token.endswith(END_OF_WORD):
            word += 1
    cut_ids = full[max_length - 1 : -1]  # pieces past the last usable slot, without the final end token
    for token_id, token in zip(cut_ids, tokenizer.convert_ids_to_tokens(cut_ids)):
        tokens.append(TokenInfo(None, token_id, token, "cut", word))
        if token.endswith(END_OF_WORD):
            word += 1
    return Tokenization(text, ids, tokens, length, max_length - 2, [t.token for t in tokens if t.role == "cut"])


def _shown(tokenization: Tokenization, padding: int) -> list[TokenInfo]:
    """The tokens worth showing: all but the padding, of which only the first `padding`."""
    out, padded = [], 0
    for t in tokenization.tokens:
        if t.role == "padding":
            padded += 1
            if padded > padding:
                continue
        out.append(t)
    return out


def token_table_text(tokenization: Tokenization, padding: int = 1) -> str:
    """A plain-text table: slot, id, token, role (padding after the first `padding` slots summarised)."""
    lines = [f"{_t('slot'):>4}  {'id':>6}  {_t('token'):<22} {_t('role')}"]
    for t in _shown(tokenization, padding):
        slot = "-" if t.position is None else str(t.position)
        lines.append(f"{slot:>4}  {t.id:>6}  {t.token!r:<22} {_t(t.role)}")
    hidden = sum(t.role == "padding" for t in tokenization.tokens) - padding
    if hidden > 0:
        lines.append("   " + _t("… {n} more padding slots (id {id})").format(n=hidden, id=tokenization.ids[-1]))
    used = tokenization.length - 2
    lines.append(_t("{used} of {slots} usable slots used; {cut} piece(s) cut").format(used=used, slots=tokenization.slots, cut=len(tokenization.cut)))
    return "\n".join(lines)


def token_table_html(tokenization: Tokenization, padding: int = 1, title: str | None = None) -> str:
    """An HTML table of the tokens: pieces of one word share a colour; start/end grey, cut pieces red."""
    cells_token, cells_id, cells_slot = [], [], []
    for t in _shown(tokenization, padding):
        colour = _WORD_COLOURS[t.word % len(_WORD_COLOURS)] if t.role == "word" else _ROLE_COLOURS[t.role]
        if t.role == "cut":
            colour = _ROLE_COLOURS["cut"]
        style = f'style="background:{colour};padding:2px 6px;border:1px solid #ccc;font-family:monospace"'
        cells_slot.append(f"<td {style}>{_t('cut') if t.position is None else t.position}</td>")
        cells_token.append(f"<td {style}>{html.escape(t.token)}</td>")
        cells_id.append(f"<td {style}>{t.id}</td>")
    used = tokenization.length - 2
    summary = _t("{used} of {slots} usable slots used").format(used=used, slots=tokenization.slots)
    if tokenization.cut:
        summary += f"; <b style='color:#b00020'>{_t('cut:')} {html.escape(' '.join(tokenization.cut))}</b>"
    head = f"<div><b>{html.escape(_t(title))}</b></div>" if title else ""
    return (
        f'{head}<div style="overflow-x:auto"><table style="border-collapse:collapse;font-size:12px">'
        f"<tr><th>{_t('slot')}</th>{''.join(cells_slot)}</tr><tr><th>{_t('token')}</th>{''.join(cells_token)}</tr>"
        f"<tr><th>id</th>{''.join(cells_id)}</tr></table></div><div style='font-size:12px'>{summary}</div>"
    )


def is_clip_vocabulary(tokenizer) -> bool:
    """Whether `tokenizer` has CLIP's 49,408-token BPE vocabulary (start 49406, end 49407)."""
    return len(tokenizer) == CLIP_VOCAB_SIZE and tokenizer.bos_token_id == CLIP_START_ID and tokenizer.eos_token_id == CLIP_END_ID


def reference_tokenizer(pipe=None):
    """(tokenizer, description) of CLIP's real BPE vocabulary, or (None, why) if none is available.

    Tried in order: the pipeline's own tokenizer if it is CLIP's (a real SD checkpoint);
    `sdexplain.architectures.clip_tokenizer()` (built offline from the `instant-clip-tokenizer`
    package's copy of OpenAI's vocabulary; not installable on Python 3.13, e.g. Colab).
    """
    own = getattr(pipe, "tokenizer", None)
    if own is not None and is_clip_vocabulary(own):
        return own, "the loaded model's own tokenizer (CLIP BPE, 49,408 tokens)"
    try:
        from sdexplain.architectures import clip_tokenizer

        return clip_tokenizer(), "CLIP's BPE vocabulary (49,408 tokens), rebuilt offline from the instant-clip-tokenizer package"
    except ImportError:
        return None, (
            "CLIP's real vocabulary is not available here: the instant-clip-tokenizer package is not installed "
            "(it has no wheel for Python 3.13) and the loaded model's tokenizer is not CLIP's. Load a real SD "
            "checkpoint (MODEL = a Hub id) to see it."
        )


# ----------------------------------------------------------------------------- token embeddings


def token_embedding_matrix(pipe) -> torch.Tensor:
    """(V, D) float32 CPU: the text encoder's token embedding table, one learned vector per token id."""
    return pipe.text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)


def word_token_ids(tokenizer, words) -> list[int]:
    """The token id of each word; a word that is not a single token is an error (name it)."""
    ids = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise ValueError(f"{word!r} is {len(pieces)} tokens {shown}, not one; pick words that are single tokens")
        ids.append(pieces[0])
    return ids


def word_vectors(pipe, words) -> torch.Tensor:
    """(N, D) the token embeddings of single-token words, read from the loaded text encoder."""
    return token_embedding_matrix(pipe)[word_token_ids(pipe.tokenizer, words)]


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarity of N vectors (N, D): 1 = same direction, 0 = unrelated."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return unit @ unit.T


def most_opposite_pairs(matrix: torch.Tensor, words, k: int = 3) -> list[tuple[str, str, float]]:
    """The k pairs of different words (i < j) with the lowest cosine in `matrix` (N, N), most opposite first:
    [(word_i, word_j, cosine)]. `words`: the N names of the rows."""
    n = matrix.shape[0]
    if tuple(matrix.shape) != (n, n) or len(words) != n:
        raise ValueError(f"need a square matrix and one word per row, got {tuple(matrix.shape)} and {len(words)} words")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    i, j = torch.triu_indices(n, n, offset=1)
    values = matrix[i, j].float()
    order = values.argsort()[:k].tolist()
    return [(words[int(i[o])], words[int(j[o])], float(values[o])) for o in order]


def nearest_neighbours(pipe, word: str, k: int = 5, candidates=None) -> list[tuple[str, float]]:
    """The k tokens whose embeddings are closest (cosine) to `word`'s, best first, the word itself excluded.

    candidates: words to search among (each a single token); None = the whole vocabulary.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    table = token_embedding_matrix(pipe)  # (V, D)
    (word_id,) = word_token_ids(pipe.tokenizer, [word])
    if candidates is None:
        ids = list(range(table.shape[0]))
    else:
        ids = word_token_ids(pipe.tokenizer, candidates)
    ids = [i for i in ids if i != word_id]
    similarity = torch.nn.functional.cosine_similarity(table[ids], table[word_id][None], dim=-1)  # (len(ids),)
    best = similarity.topk(min(k, len(ids)))
    names = pipe.tokenizer.convert_ids_to_tokens([ids[i] for i in best.indices.tolist()])
    return [(name, float(s)) for name, s in zip(names, best.values.tolist())]


def group_similarity(matrix: torch.Tensor, groups: dict[str, list[int]], keep=None) -> dict[str, tuple[float, float]]:
    """Per group: (mean cosine between two different members, mean cosine to members of other groups).

    groups: name -> row indices of `matrix`. A group whose first number is larger sits together.
    keep: optional (N, N) booleans, the pairs of different members to count within a group (e.g. False
    for synonyms, whose closeness is not the group's); every pair by default.
    """
    n = matrix.shape[0]
    keep = torch.ones(n, n, dtype=torch.bool) if keep is None else torch.as_tensor(keep, dtype=torch.bool)
    if tuple(keep.shape) != (n, n):
        raise ValueError(f"keep must be {n}×{n} like the matrix, got {tuple(keep.shape)}")
    out = {}
    for name, members in groups.items():
        pairs = [(i, j) for i in members for j in members if i != j and keep[i, j]]
        if not pairs:
            raise ValueError(f"group {name!r} needs at least 2 members (and one kept pair) to have a within-group similarity")
        others = [i for other, rows in groups.items() if other != name for i in rows]
        within = sum(float(matrix[i, j]) for i, j in pairs) / len(pairs)
        between = matrix[members][:, others].mean() if others else torch.tensor(float("nan"))
        out[name] = (within, float(between))
    return out


# ----------------------------------------------------------------------------- the text transformer


@torch.no_grad()
def encode(pipe, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(token embeddings, hidden states), each (B, 77, D) float32 CPU, for a prompt or a list of prompts.

    Token embeddings: the embedding table's rows for the prompt's ids (the transformer's input, before
    position embeddings are added). Hidden states: `pipe.encode_prompt` — exactly what the U-Net receives.
    SDXL has two text encoders whose hidden states the U-Net gets side by side (D = 768 + 1280 on the real
    model): the token embeddings are likewise both tables' rows, each for its own tokenizer's ids, side by side.
    """
    from sdexplain.loading import is_xl

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    pairs = [(getattr(pipe, t), getattr(pipe, e)) for t, e in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")) if getattr(pipe, e, None) is not None]
    rows = []
    for tokenizer, encoder in pairs:
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids  # (B, 77)
        rows.append(encoder.get_input_embeddings()(ids.to(encoder.device)).to("cpu", torch.float32))  # (B, 77, D_i)
    token = torch.cat(rows, dim=-1)  # (B, 77, D)
    with torch.no_grad():
        if is_xl(pipe):
            hidden = pipe.encode_prompt(prompt=prompts, device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
        else:
            hidden, _ = pipe.encode_prompt(prompts, pipe._execution_device, 1, False)  # (B, 77, D)
    if hidden.shape[-1] != token.shape[-1]:
        raise ValueError(f"the text encoders' token embeddings are {token.shape[-1]} wide but the hidden states {hidden.shape[-1]}: not a layout tokens.encode knows")
    return token.detach(), hidden.to("cpu", torch.float32)


@dataclass
class PositionSimilarity:
    position: int
    token_a: str
    token_b: str
    before: float  # cosine of the token embeddings
    after: float  # cosine of the hidden states (after the transformer)


def context_similarity(pipe, prompt_a: str, prompt_b: str) -> list[PositionSimilarity]:
    """Slot by slot, up to the longer prompt's end token: how alike the two prompts' vectors are, before and after.

    The same token in both prompts has cosine 1 before the transformer (a table look-up ignores context);
    after it, the vectors differ wherever the context differs. CLIP's text transformer is causal: a slot
    only sees the slots to its left, so slots before the first difference stay identical.
    """
    token, hidden = encode(pipe, [prompt_a, prompt_b])  # (2, 77, D) each
    a, b = tokenize(pipe.tokenizer, prompt_a), tokenize(pipe.tokenizer, prompt_b)
    before = torch.nn.functional.cosine_similarity(token[0], token[1], dim=-1)  # (77,)
    after = torch.nn.functional.cosine_similarity(hidden[0], hidden[1], dim=-1)  # (77,)
    rows = []
    for p in range(max(a.length, b.length)):
        rows.append(PositionSimilarity(p, a.tokens[p].token, b.tokens[p].token, float(before[p]), float(after[p])))
    return rows


@dataclass
class TextSelfAttention:
    """The text transformer's own attention between the prompt's slots (start … end token)."""

    labels: list  # [str] the slots' tokens, start and end included
    weights: torch.Tensor  # (layers, n, n) float32: row i = how slot i spreads its attention, heads averaged


def text_self_attention(pipe, prompt: str) -> TextSelfAttention:
    """Self-attention weights of every text-transformer layer for `prompt`, observed with forward pre-hooks.

    Each layer's hook receives the hidden states entering its self-attention and recomputes what the
    layer computes: softmax(Q·Kᵀ/√d + causal mask) per head, with the layer's own q/k projections
    (`transformers`' CLIP: Q = q_proj(h), K = k_proj(h)). CLIP's text transformer is causal: slot i sees
    only slots 0 … i, so the upper triangle is exactly 0. Tested equal to the "eager" implementation's
    `output_attentions`. The encoder runs once; the hooks are removed even if it fails.
    """
    tokenization = tokenize(pipe.tokenizer, prompt)
    n = tokenization.length
    encoder = pipe.text_encoder
    layers = getattr(encoder, "text_model", encoder).encoder.layers  # older transformers wrap it in .text_model
    captured = [None] * len(layers)

    def hook_for(index, attention):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]  # (1, 77, D)
            batch, slots, _ = hidden.shape
            q = attention.q_proj(hidden).view(batch, slots, attention.num_heads, attention.head_dim).transpose(1, 2)  # (1, H, 77, d)
            k = attention.k_proj(hidden).view(batch, slots, attention.num_heads, attention.head_dim).transpose(1, 2)  # (1, H, 77, d)
            scores = (q @ k.transpose(-1, -2)) * attention.scale  # (1, H, 77, 77)
            causal = torch.ones(slots, slots, dtype=torch.bool, device=scores.device).triu(1)  # True above the diagonal
            weights = scores.float().masked_fill(causal, float("-inf")).softmax(-1)  # (1, H, 77, 77)
            captured[index] = weights[0].mean(0)[:n, :n].cpu()  # (n, n), heads averaged

        return hook

    ids = torch.tensor([tokenization.ids], device=encoder.device)  # (1, 77)
    handles = []
    try:
        for index, layer in enumerate(layers):
            handles.append(layer.self_attn.register_forward_pre_hook(hook_for(index, layer.self_attn), with_kwargs=True))
        with torch.no_grad():
            encoder(ids)
    finally:
        for handle in handles:
            handle.remove()
    return TextSelfAttention([t.token for t in tokenization.tokens[:n]], torch.stack(captured))


def self_attention_figure(attention: TextSelfAttention, title: str | None = None, cell: float = 0.45) -> Figure:
    """The layers' mean self-attention as a slot × slot heat map (row = the slot that looks). One axes + colour bar."""
    n = len(attention.labels)
    labels = [label.removesuffix("</w>").replace("<|startoftext|>", "<start>").replace("<|endoftext|>", "<end>") for label in attention.labels]
    fig = Figure(figsize=(cell * n + 2.0, cell * n + 1.2), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(attention.weights.mean(0).numpy(), cmap="viridis", vmin=0)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("looked at (key)")
    ax.set_ylabel("looking (query)")
    fig.colorbar(shown, ax=ax, shrink=0.7, label="attention weight")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def text_encoder_shapes(configs: dict) -> dict[str, dict]:
    """Per architecture (e.g. `sdexplain.architectures.ARCHITECTURES`): tokens per prompt, vector width, layers.

    Read from the text encoder configs: the hidden states the U-Net gets are (tokens, width).
    """
    out = {}
    for name, arch in configs.items():
        text = arch["text_encoder"]
        out[name] = {
            "hub_id": arch.get("hub_id", ""),
            "tokens": text["max_position_embeddings"],
            "width": text["hidden_size"],
            "layers": text["num_hidden_layers"],
            "vocabulary": text["vocab_size"],
        }
    return out


# ----------------------------------------------------------------------------- figures


def similarity_figure(matrix: torch.Tensor, labels, title: str | None = None, cell: float = 0.32) -> Figure:
    """A cosine-similarity matrix as a heat map (−1 blue … +1 red), words on both axes. One axes + colour bar."""
    n = len(labels)
    if tuple(matrix.shape) != (n, n):
        raise ValueError(f"matrix is {tuple(matrix.shape)} but there are {n} labels")
    fig = Figure(figsize=(cell * n + 1.6, cell * n + 0.9), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(matrix.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    fig.colorbar(shown, ax=ax, shrink=0.7, label="cosine similarity")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def context_figure(rows: list[PositionSimilarity], title: str | None = None) -> Figure:
    """Per slot, the cosine of two prompts' vectors before (token embedding) and after the transformer. One axes."""
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(4.0, 0.55 * len(rows) + 1.5), 2.8), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [r.before for r in rows], width=0.4, color="0.6", label="before: token embeddings")
    ax.bar(x + 0.2, [r.after for r in rows], width=0.4, color="tab:purple", label="after: hidden states")
    names = [r.token_a.removesuffix(END_OF_WORD) if r.token_a == r.token_b else f"{r.token_a.removesuffix(END_OF_WORD)}/{r.token_b.removesuffix(END_OF_WORD)}" for r in rows]
    names = [n.replace("<|startoftext|>", "<start>").replace("<|endoftext|>", "<end>") for n in names]
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(min(-0.1, min(min(r.before, r.after) for r in rows) - 0.05), 1.08)
    ax.axhline(1.0, color="0.3", linewidth=0.6, linestyle=":")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    return fig
