"""The text conditioning the WebUI builds from a prompt, handed to the stock diffusers pipeline.

    cond = webui_conditioning(pipe, "a (red:1.3) cat, [cat:dog:0.5]", steps=20, clip_skip=1)
    images = pipe(**cond.pipe_kwargs(), num_inference_steps=20, guidance_scale=7).images

What the WebUI (AUTOMATIC1111 / Forge, SD 1.x and 2.x) does with the text, step by step, and what
this module does the same way:

1. Prompt editing and alternation (`sdexplain.prompts.prompt_schedule`) turn the prompt into a few
   plain texts, each used up to a step.
2. Emphasis (`sdexplain.prompts.parse_attention`) splits each text into (fragment, weight); each
   token gets its fragment's weight.
3. Chunks: the tokens are cut into chunks of 75 (the text encoder's 77 positions minus start and
   end), each chunk gets its own start token, end token and end-token padding, and is encoded on its
   own; the outputs are concatenated: 77·k positions for k chunks. `BREAK` ends the current chunk
   early (padding it). When a chunk is full and a comma came within the last 20 tokens, the text
   after that comma moves to the next chunk (WebUI's "comma padding backtrack", default 20).
4. Clip skip N (WebUI's numbering: 1 = the last layer): the hidden states N−1 layers before the
   last, passed through the encoder's final layer norm — diffusers' `clip_skip = N − 1`, computed
   with the same lines as diffusers' `encode_prompt` (tests check clip skip 1 equals `encode_prompt`
   and clip skip N equals the encoder with its last N − 1 layers removed).
5. Emphasis, applied to the encoder's OUTPUT: each position's vector is multiplied by its weight,
   then the whole chunk is rescaled so its mean equals the mean before (WebUI's "Original" emphasis).
   compel (the weighting library diffusers' docs point to) differs, by its own documentation: its
   own syntax (`word+`, `word--`, `(word)1.3`, `.blend()`, `.and()`); weights > 1 scale the
   token's part of the embedding, weights < 1 are applied by masking the token out with an
   attention mask and blending towards that embedding; no mean restore; and prompts are truncated
   at 77 tokens unless `truncate_long_prompts=False` (then they are chunked).
6. Prompt and negative prompt with different numbers of chunks are padded to the same length with
   the encoding of an empty prompt (WebUI's option "pad prompt/negative prompt"; by default the
   WebUI runs the two passes separately instead — diffusers batches them, so they must match).

The result goes to the pipeline as `prompt_embeds` / `negative_prompt_embeds`; the switches of
prompt editing happen in diffusers' `callback_on_step_end`, which replaces `prompt_embeds` for the
next step. Nothing in the pipeline is changed, so `sdexplain.trace` records the same image as the
untraced call. WebUI counts model calls from 0 and uses, at call i, the first scheduled text whose
end step is >= i (`sdexplain.prompts.text_at_step`); a sampler with one model call per step
(Euler, Euler a, DPM++ 2M, DDIM) matches diffusers' step index.

Plain diffusers (`pipe(prompt=...)`) instead reads the text literally: brackets and `:1.3` are
tokens, `BREAK` is a word, and everything after the first 75 tokens is cut (a warning in the log).

Sources: AUTOMATIC1111/stable-diffusion-webui modules/sd_hijack_clip.py (tokenize_line,
process_tokens), modules/sd_emphasis.py (EmphasisOriginal), modules/sd_samplers_cfg_denoiser.py
(pad_cond, reconstruct_cond_batch); diffusers StableDiffusionPipeline.encode_prompt (clip_skip);
compel's README and changelog (syntax, downweighting by attention mask, truncate_long_prompts) —
https://github.com/damian0815/compel, https://pypi.org/project/compel/.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from sdexplain.loading import is_xl
from sdexplain.prompts import BREAK, parse_attention, prompt_schedule, schedule_index

COMMA_BACKTRACK = 20  # WebUI's default "Prompt word wrap length limit" (comma_padding_backtrack)


@dataclass
class Chunk:
    """One 77-position piece of the conditioning: ids and per-position emphasis weights."""

    ids: list[int]
    weights: list[float]
    used: int  # prompt tokens in the chunk (start, end and padding not counted)
    strings: list[str] = field(default_factory=list)


def _check_clip_skip(text_encoder, clip_skip) -> None:
    layers = int(text_encoder.config.num_hidden_layers)
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, numbers.Integral) or not 1 <= clip_skip <= layers:
        raise ValueError(f"clip_skip must be an int from 1 (the last layer) to {layers} (this text encoder's layers), got {clip_skip!r}")


def make_chunks(tokenizer, text: str, comma_backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """The WebUI's chunks for one plain text (no prompt editing left in it)."""
    fragments = parse_attention(text)
    size = tokenizer.model_max_length - 2  # 75 for CLIP's 77 positions
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    comma = tokenizer.get_vocab().get(",</w>")
    texts = [piece for piece, _ in fragments]
    tokenized = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal ids, weights, last_comma
        fill = size - len(ids)
        row = [start] + ids + [end] * fill + [end]
        if pad != end:  # SD 2.x's tokenizer: padding after the first end token (as WebUI and diffusers do)
            first = row.index(end)
            row = row[: first + 1] + [pad] * (len(row) - first - 1)
        chunks.append(Chunk(ids=row, weights=[1.0] + weights + [1.0] * fill + [1.0], used=len(ids)))
        ids, weights, last_comma = [], [], -1

    for tokens, (piece, weight) in zip(tokenized, fragments):
        if (piece, weight) == BREAK:
            close()
            continue
        for token in tokens:
            if token == comma:
                last_comma = len(ids)
            elif comma_backtrack and len(ids) == size and last_comma != -1 and len(ids) - last_comma <= comma_backtrack:
                cut = last_comma + 1
                moved_ids, moved_weights = ids[cut:], weights[cut:]
                ids, weights = ids[:cut], weights[:cut]
                close()
                ids, weights = moved_ids, moved_weights
            if len(ids) == size:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    for chunk in chunks:
        chunk.strings = tokenizer.convert_ids_to_tokens(chunk.ids)
    return chunks


def encode_chunk(text_encoder, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    """(B, 77) ids -> (B, 77, D), as diffusers' encode_prompt does with `clip_skip = clip_skip − 1`."""
    if clip_skip == 1:
        return text_encoder(ids)[0]
    hidden = text_encoder(ids, output_hidden_states=True)[-1][-clip_skip]  # diffusers: [-(clip_skip + 1)]
    # transformers 4 keeps the layers under .text_model; transformers 5 has them on the model itself
    # (diffusers 0.42's encode_prompt still reads .text_model, so its clip_skip fails on transformers 5)
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)


def emphasize(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """WebUI's "Original" emphasis: z (B, 77, D) × weights (B, 77), rescaled to z's original mean."""
    original_mean = z.mean()
    z = z * weights.reshape(weights.shape + (1,)).expand(z.shape)
    new_mean = z.mean()
    return z * (original_mean / new_mean)


@torch.no_grad()
def encode(pipe, text: str, clip_skip: int = 1, emphasis: bool = True) -> tuple[torch.Tensor, list[Chunk]]:
    """(1, 77·k, D) conditioning of one plain text the WebUI way, and its chunks."""
    if is_xl(pipe):
        raise ValueError(
            f"the WebUI's conditioning is built here for SD 1.x/2.x (one text encoder); this {type(pipe).__name__} is SDXL, "
            "whose WebUI conditioning (each chunk through both encoders, the pooled embedding from the second's first chunk) is not built yet"
        )
    _check_clip_skip(pipe.text_encoder, clip_skip)
    chunks = make_chunks(pipe.tokenizer, text)
    device, dtype = pipe.text_encoder.device, pipe.text_encoder.dtype
    parts = []
    for chunk in chunks:
        ids = torch.tensor([chunk.ids], device=device)
        z = encode_chunk(pipe.text_encoder, ids, clip_skip)
        if emphasis:
            z = emphasize(z, torch.tensor([chunk.weights], device=device, dtype=z.dtype))
        parts.append(z.to(dtype))
    return torch.cat(parts, dim=1), chunks


def _pad_to(z: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    missing = (length - z.shape[1]) // empty.shape[1]
    return torch.cat([z, empty.repeat(z.shape[0], missing, 1)], dim=1) if missing else z


@dataclass
class WebUIConditioning:
    """A prompt (and negative prompt) as the WebUI conditions on it, ready for a diffusers call.

    schedule / negative_schedule: [(end_step, text)] from `prompt_schedule`;
    embeds / negative_embeds: one (1, 77·k, D) tensor per schedule entry (all the same length);
    chunks / negative_chunks: the chunks of each entry; fragments: parse_attention of each entry.
    """

    schedule: list[tuple[int, str]]
    negative_schedule: list[tuple[int, str]]
    embeds: list[torch.Tensor]
    negative_embeds: list[torch.Tensor]
    chunks: list[list[Chunk]]
    negative_chunks: list[list[Chunk]]
    steps: int
    switches: list[tuple[int, int, int]] = field(default_factory=list)  # (step index, prompt entry, negative entry) per step of the last run

    def at(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative, prompt) embeddings the WebUI uses at model call `index` (0-based)."""
        return (self.negative_embeds[schedule_index(self.negative_schedule, index)], self.embeds[schedule_index(self.schedule, index)])

    def callback(self, pipe, i, t, callback_kwargs):
        """diffusers' callback_on_step_end: after step i, set the conditioning for step i + 1."""
        index = i + 1
        negative, positive = self.at(index)
        current = callback_kwargs["prompt_embeds"]
        new = torch.cat([negative, positive]) if pipe.do_classifier_free_guidance else positive
        repeat = current.shape[0] // new.shape[0]  # num_images_per_prompt
        new = new.repeat_interleave(repeat, 0).to(current.device, current.dtype)
        if index < getattr(pipe, "num_timesteps", index + 1):  # the last callback sets nothing that is used
            self.switches.append((index, schedule_index(self.schedule, index), schedule_index(self.negative_schedule, index)))
        return {"prompt_embeds": new}

    def pipe_kwargs(self) -> dict:
        """Keyword arguments for a diffusers SD pipeline call (add steps, CFG, seed …)."""
        self.switches = [(0, schedule_index(self.schedule, 0), schedule_index(self.negative_schedule, 0))]
        negative, positive = self.at(0)
        kwargs = dict(prompt_embeds=positive, negative_prompt_embeds=negative)
        if len(self.schedule) > 1 or len(self.negative_schedule) > 1:
            kwargs.update(callback_on_step_end=self.callback, callback_on_step_end_tensor_inputs=["prompt_embeds"])
        return kwargs


@torch.no_grad()
def webui_conditioning(pipe, prompt: str, negative_prompt: str = "", steps: int = 20, clip_skip: int = 1, emphasis: bool = True) -> WebUIConditioning:
    """The WebUI's conditioning of `prompt` / `negative_prompt` for a run of `steps` steps."""
    for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    _check_clip_skip(pipe.text_encoder, clip_skip)
    schedule = prompt_schedule(prompt, steps)
    negative_schedule = prompt_schedule(negative_prompt, steps)
    encoded = [encode(pipe, text, clip_skip, emphasis) for _, text in schedule]
    negative_encoded = [encode(pipe, text, clip_skip, emphasis) for _, text in negative_schedule]
    length = max(z.shape[1] for z, _ in encoded + negative_encoded)
    empty = None
    if any(z.shape[1] != length for z, _ in encoded + negative_encoded):
        empty, _ = encode(pipe, "", clip_skip, emphasis)
    pad = (lambda z: _pad_to(z, length, empty)) if empty is not None else (lambda z: z)
    return WebUIConditioning(
        schedule=schedule,
        negative_schedule=negative_schedule,
        embeds=[pad(z) for z, _ in encoded],
        negative_embeds=[pad(z) for z, _ in negative_encoded],
        chunks=[c for _, c in encoded],
        negative_chunks=[c for _, c in negative_encoded],
        steps=steps,
    )


def diffusers_tokens(tokenizer, text: str) -> tuple[list[str], list[str]]:
    """What plain diffusers does with `text`: (the tokens it keeps, the tokens it cuts after 75)."""
    full = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    size = tokenizer.model_max_length - 2
    strings = tokenizer.convert_ids_to_tokens(full)
    return strings[:size], strings[size:]
