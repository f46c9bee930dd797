"""Record what a Stable Diffusion pipeline does, step by step, without changing what it does.

    with sdexplain.trace(pipe) as run:
        images = pipe("a red circle", num_inference_steps=20).images

works for diffusers' StableDiffusionPipeline, ...Img2ImgPipeline, ...InpaintPipeline and
...Depth2ImgPipeline, the same three for Stable Diffusion XL (StableDiffusionXLPipeline, ...), any batch (lists of prompts, `num_images_per_prompt`), any size, with or
without negative prompt, with classifier-free guidance on or off. The image is bit-for-bit the one
the pipeline makes untraced: only public hook points are used (forward hooks / pre-hooks on the
text encoder, its token embedding, the U-Net, the cross-attention projections and the VAE
decoder's input) and the hooks only read. One thing is swapped for the duration of the `with`
block: `pipe.tokenizer` (and SDXL's `pipe.tokenizer_2`), each by a stand-in that passes every call through unchanged and remembers which text
gave which ids, so the tokens cut from a long prompt are computed by the tokenizer itself (not read
from a log message, which another pipeline may write and a quiet log level hides). All hooks are
removed and the tokenizer put back when the `with` block ends, also when it raises.
One trace records one pipeline call; nesting traces of the same U-Net is refused.

What `run` (a `Trace`) holds — everything on the CPU, float32:

    run.tokens            [Tokens] one per image in the batch (prompt rows repeated per image)
    run.negative_tokens   [Tokens] the same for the negative / unconditional prompt ([] without CFG)
        Tokens.ids (77 ints), .strings (77 token strings), .length (positions up to and including
        the first end token), .words (the real words), .cut (token strings that did not fit in 75),
        .filled (all 75 slots used)
    run.tokens_2, run.negative_tokens_2   SDXL: the same from its second tokenizer ([] for SD 1.x/2.x)
    run.embeddings        Embeddings
        .token          (B, 77, D) the text encoder's input (token) embeddings of the prompt
        .token_uncond   (B, 77, D) of the negative prompt, or None
        .token_2, .token_2_uncond   SDXL: the same for the second text encoder (else None)
        .hidden         (B, 77, D) the encoder hidden states the U-Net receives (conditional half);
                        SDXL: both text encoders' outputs side by side (D = 768 + 1280 = 2048)
        .hidden_uncond  (B, 77, D) or None without CFG (SDXL without a negative prompt: all zeros)
        .parts          [TextPart] which slice of D each text encoder fills and from which of its
                        layers ("last" = its final output; -2 = hidden_states[-2], the penultimate layer
                        SDXL and clip_skip read), found by comparing the encoder's outputs with the
                        U-Net's input; layer None where none matched exactly
        .pooled, .pooled_uncond     SDXL: (B, 1280) the pooled text embedding the U-Net adds to its
                        time embedding (the second encoder's projected end token); None otherwise
    run.micro_conditioning, run.micro_conditioning_uncond   SDXL: [dict] per image, the numbers the
                        U-Net is told besides the text: original_size (h, w), crops_coords_top_left
                        (top, left), target_size (h, w) — or aesthetic_score for the refiner; [] otherwise
    run.steps             [Step] one per U-Net evaluation of the sampling loop (= the pipeline's
                          loop iterations: N for DDIM/Euler/DPM++, N+1 for PNDM; int(N·strength)
                          for image-to-image with a first-order scheduler)
        Step.index, .timestep (float), .alpha_bar (ᾱ_t, float), .sigma (sqrt(1−ᾱ_t), float)
        .latent_in   (B, C, h, w) the latent going in, before scheduler.scale_model_input
        .noise_uncond (B, C, h, w) model output for the unconditional half, None without CFG
        .noise_cond   (B, C, h, w) model output for the prompt
        .noise_guided (B, C, h, w) uncond + g·(cond − uncond) (the pipeline's formula; = cond without CFG)
        .x0          (B, C, h, w) predicted clean latent (ε- or v-prediction, the scheduler's ᾱ)
        .latent_out  (B, C, h, w) the latent after the step (the next step's latent_in; for the last
                     step the latent handed to the VAE — None with output_type="latent")
        tensors are None on steps the memory budget thinned out (see run.reductions)
    run.attention         sdexplain.attention.AttentionMaps (word_maps(batch_index, step), ...)
    run.previews          [Preview] .step, .images (B, 3, H', W') in [0, 1], decoded from x0 with
                          the pipeline's VAE every `preview_every` steps and at the last step
    run.reductions        [str] what the memory budget made the trace leave out
    run.nbytes()          bytes of tensor data the trace keeps

Memory: `budget_bytes` (default 256 MiB) is checked before the first step, once batch, latent
size, number of steps and prompt length are known; attention maps get at most a quarter of it.
Over budget the trace lowers the attention resolution, keeps attention / previews / step tensors
only every k-th step, and says so in `run.reductions`. Each step costs one device→host copy.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sdexplain.attention import AttentionMaps, CrossAttentionRecorder
from sdexplain.diffusion import alpha_bar_from_sigma_ve, predict_x0

MiB = 2**20
DEFAULT_BUDGET = 256 * MiB

_ACTIVE_UNETS: set[int] = set()  # id() of U-Nets being traced: nested traces are refused


@dataclass
class Tokens:
    ids: list  # [int] * 77
    strings: list  # [str] * 77
    length: int  # positions up to and including the first end token
    cut: list = field(default_factory=list)  # [str] token strings that did not fit
    filled: bool = False  # all usable slots taken: text beyond them (if any) was cut

    @property
    def words(self) -> list[str]:
        """The real tokens, without start, end and padding."""
        return self.strings[1 : self.length - 1]


@dataclass
class TextPart:
    encoder: str  # "text_encoder" or "text_encoder_2"
    start: int  # its channels in the U-Net's text input: [start, start + width)
    width: int
    layer: object = None  # "last" (the encoder's output), -2 (hidden_states[-2]) …, None: not matched


@dataclass
class Embeddings:
    token: torch.Tensor | None = None  # (B, 77, D) text encoder input embeddings, prompt
    token_uncond: torch.Tensor | None = None  # (B, 77, D) negative prompt
    hidden: torch.Tensor | None = None  # (B, 77, D) what the U-Net receives, prompt
    hidden_uncond: torch.Tensor | None = None  # (B, 77, D) negative prompt
    token_2: torch.Tensor | None = None  # SDXL: (B, 77, D2) second text encoder's input embeddings, prompt
    token_2_uncond: torch.Tensor | None = None  # SDXL: negative prompt
    pooled: torch.Tensor | None = None  # SDXL: (B, P) pooled text embedding the U-Net receives, prompt
    pooled_uncond: torch.Tensor | None = None  # SDXL: negative prompt (zeros when there is none)
    parts: list = field(default_factory=list)  # [TextPart]


@dataclass
class Step:
    index: int
    timestep: float
    alpha_bar: float
    sigma: float  # sqrt(1 - alpha_bar)
    latent_in: torch.Tensor | None = None  # (B, C, h, w)
    noise_uncond: torch.Tensor | None = None  # (B, C, h, w)
    noise_cond: torch.Tensor | None = None  # (B, C, h, w)
    noise_guided: torch.Tensor | None = None  # (B, C, h, w)
    x0: torch.Tensor | None = None  # (B, C, h, w)
    latent_out: torch.Tensor | None = None  # (B, C, h, w)


@dataclass
class Preview:
    step: int
    images: torch.Tensor  # (B, 3, H', W') in [0, 1]


@dataclass
class Trace:
    tokens: list = field(default_factory=list)  # [Tokens] per image
    negative_tokens: list = field(default_factory=list)  # [Tokens] per image
    tokens_2: list = field(default_factory=list)  # SDXL: [Tokens] per image, second tokenizer
    negative_tokens_2: list = field(default_factory=list)  # SDXL
    micro_conditioning: list = field(default_factory=list)  # SDXL: [dict] per image
    micro_conditioning_uncond: list = field(default_factory=list)  # SDXL: [dict] per image, with CFG
    embeddings: Embeddings = field(default_factory=Embeddings)
    steps: list = field(default_factory=list)  # [Step]
    attention: AttentionMaps = field(default_factory=AttentionMaps)
    previews: list = field(default_factory=list)  # [Preview]
    reductions: list = field(default_factory=list)  # [str]
    pipeline: str = ""  # pipeline class name
    scheduler: str = ""  # scheduler class name
    prediction_type: str = "epsilon"
    guidance_scale: float | None = None  # None without CFG

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the trace holds."""
        out = [t for t in vars(self.embeddings).values() if isinstance(t, torch.Tensor)]
        for step in self.steps:
            out += [t for t in (step.latent_in, step.noise_uncond, step.noise_cond, step.noise_guided, step.x0, step.latent_out) if t is not None]
        out += [p.images for p in self.previews]
        out += self.attention.tensors()
        return out

    def nbytes(self) -> int:
        """Bytes of tensor data kept (shared storage counted once)."""
        seen: dict[int, int] = {}
        for t in self.tensors():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())


def trace(
    pipe,
    *,
    attention: bool = True,
    attention_size: int = 64,
    preview_every: int = 5,
    preview_size: int = 128,
    budget_bytes: int = DEFAULT_BUDGET,
):
    """Context manager recording one pipeline call into a `Trace` (see the module docstring).

    attention_size: longest side of the common attention map grid (capped at the latent size).
    preview_every: decode a preview every k steps (and at the last); 0 turns previews off.
    preview_size: longest side of previews in pixels.
    budget_bytes: the most tensor bytes the trace may keep.
    """
    for name in ("unet", "vae", "scheduler"):
        if getattr(pipe, name, None) is None:
            raise TypeError(f"trace() needs a Stable Diffusion pipeline with a {name}; got {type(pipe).__name__}")
    if not isinstance(attention_size, int) or attention_size < 1:
        raise ValueError(f"attention_size must be a positive int, got {attention_size!r}")
    if not isinstance(preview_every, int) or preview_every < 0:
        raise ValueError(f"preview_every must be an int >= 0 (0 = no previews), got {preview_every!r}")
    if not isinstance(preview_size, int) or preview_size < 8:
        raise ValueError(f"preview_size must be an int >= 8 pixels, got {preview_size!r}")
    if not isinstance(budget_bytes, int) or budget_bytes < 1:
        raise ValueError(f"budget_bytes must be a positive int, got {budget_bytes!r}")
    return TraceContext(pipe, _Options(attention, attention_size, preview_every, preview_size, budget_bytes), texts=None)


def trace_with_prompts(pipe, texts: tuple[list[str], list[str] | None], **options):
    """`trace` for a call whose prompt texts are known (used by `generate`): cut tokens are exact.

    texts: (the prompt of each row, the negative prompt of each row or None without guidance).
    """
    context = trace(pipe, **options)  # validates the options
    context.texts = texts
    return context


@dataclass
class _Options:
    attention: bool
    attention_size: int
    preview_every: int
    preview_size: int
    budget_bytes: int


class TraceContext:
    """The context manager `trace` returns: attaches the hooks on enter, removes them on exit."""

    def __init__(self, pipe, options: _Options, texts=None):
        self.pipe, self.options, self.texts = pipe, options, texts
        self.recorder: _Recorder | None = None

    def __enter__(self) -> Trace:
        key = id(self.pipe.unet)
        if key in _ACTIVE_UNETS:
            raise RuntimeError("this pipeline's U-Net is already being traced; nested traces are not supported")
        if self.recorder is not None:
            raise RuntimeError("a trace context can be entered once; call trace(pipe) again for a new run")
        self.recorder = _Recorder(self.pipe, self.options)
        self.recorder.known_texts = self.texts
        _ACTIVE_UNETS.add(key)
        try:
            self.recorder.attach()
        except BaseException:
            self._close()
            raise
        return self.recorder.run

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.recorder.finish()
        finally:
            self._close()

    def _close(self) -> None:
        self.recorder.remove()
        _ACTIVE_UNETS.discard(id(self.pipe.unet))


class _TokenizerWitness:
    """Stands in for `pipe.tokenizer` during a trace: every call and attribute goes to the real
    tokenizer unchanged; calls with text also note (texts, input_ids), so the text encoder's ids
    can be traced back to the text that made them and the cut tokens computed from that text.

    It belongs to one pipeline object: another pipeline (even one sharing the tokenizer, or one
    running in another thread) is not heard.
    """

    def __init__(self, tokenizer):
        object.__setattr__(self, "tokenizer", tokenizer)
        object.__setattr__(self, "calls", [])  # [(texts: [str], input_ids: (Bp, L) CPU tensor)]

    def __call__(self, text=None, *args, **kwargs):
        out = self.tokenizer(text, *args, **kwargs)
        texts = [text] if isinstance(text, str) else text
        ids = out.get("input_ids") if hasattr(out, "get") else None
        if isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts) and isinstance(ids, torch.Tensor):
            self.calls.append((list(texts), ids.detach().to("cpu")))
        return out

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __setattr__(self, name, value):
        setattr(self.tokenizer, name, value)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def texts_for(self, ids: torch.Tensor) -> list[str] | None:
        """The texts of the latest call that produced exactly `ids` (Bp, 77), or None."""
        for texts, call_ids in reversed(self.calls):
            if call_ids.shape == ids.shape and torch.equal(call_ids, ids):
                return texts
        return None


class _Recorder:
    """Owns the hooks of one traced call and fills `self.run`."""

    def __init__(self, pipe, options: _Options):
        self.pipe = pipe
        self.options = options
        self.run = Trace(pipeline=type(pipe).__name__)
        self.handles: list = []
        self.attn = CrossAttentionRecorder(pipe.unet) if options.attention else None
        self.encoders = _encoders(pipe)  # [(text encoder attribute, tokenizer attribute)]
        self.witnesses: dict[str, _TokenizerWitness] = {}  # tokenizer attribute -> its stand-in during the run
        self.known_texts: tuple[list[str], list[str] | None] | None = None  # set by generate()
        self.text_calls: list[dict] = []  # one per text encoder call: {"encoder", "ids", "texts", "token", "candidates"}
        self.count = 0  # U-Net calls so far
        self.plan: dict | None = None
        self.pending: dict = {}  # tensors from the current U-Net pre-hook
        self.final_parts: list[torch.Tensor] = []  # VAE decoder inputs (the final latent)
        self.decoding_preview = False

    # -- hooks ----------------------------------------------------------------------------------

    def attach(self) -> None:
        pipe = self.pipe
        for k, (encoder_name, _) in enumerate(self.encoders):
            encoder = getattr(pipe, encoder_name)
            self.handles.append(encoder.register_forward_pre_hook(functools.partial(self._on_text_encoder, k), with_kwargs=True))
            self.handles.append(encoder.register_forward_hook(functools.partial(self._on_text_encoder_output, k)))
            embedding = encoder.get_input_embeddings()
            self.handles.append(embedding.register_forward_hook(functools.partial(self._on_token_embedding, k)))
        self.handles.append(pipe.unet.register_forward_pre_hook(self._on_unet_input, with_kwargs=True))
        self.handles.append(pipe.unet.register_forward_hook(self._on_unet_output))
        vae_input = pipe.vae.post_quant_conv if getattr(pipe.vae, "post_quant_conv", None) is not None else pipe.vae.decoder
        self.handles.append(vae_input.register_forward_pre_hook(self._on_vae_decode))
        if self.attn is not None:
            self.attn.attach()
        for _, tokenizer_name in self.encoders:
            tokenizer = getattr(pipe, tokenizer_name, None)
            if tokenizer is not None:
                self.witnesses[tokenizer_name] = witness = _TokenizerWitness(tokenizer)
                pipe.__dict__[tokenizer_name] = witness  # not setattr: that would rewrite the pipeline's config

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.attn is not None:
            self.attn.remove()
        for tokenizer_name, witness in self.witnesses.items():
            if self.pipe.__dict__.get(tokenizer_name) is witness:
                self.pipe.__dict__[tokenizer_name] = witness.tokenizer

    def _witness(self, k: int):
        return self.witnesses.get(self.encoders[k][1])

    def _tokenizer(self, k: int):
        witness = self._witness(k)
        return witness.tokenizer if witness is not None else getattr(self.pipe, self.encoders[k][1], None)

    def _on_text_encoder(self, k, module, args, kwargs):
        if self.count:
            raise RuntimeError("one trace records one pipeline call; open a new `with trace(pipe)` for the next call")
        ids = args[0] if args else kwargs["input_ids"]  # (Bp, 77)
        ids = ids.detach().to("cpu")
        witness = self._witness(k)
        texts = witness.texts_for(ids) if witness is not None else None
        self.text_calls.append({"encoder": k, "ids": ids, "texts": texts})

    def _last_call(self, k: int, missing: str) -> dict | None:
        """The latest call of text encoder k that has no `missing` entry yet."""
        for call in reversed(self.text_calls):
            if call["encoder"] == k:
                return call if missing not in call else None
        return None

    def _on_text_encoder_output(self, k, module, args, output):
        call = self._last_call(k, "candidates")
        if call is None:
            return
        # What the U-Net may have been given from this call (kept on the device until the first step):
        # the encoder's output, or one of its layers when the pipeline asked for them (SDXL, clip_skip).
        candidates = []
        first = output[0]
        if isinstance(first, torch.Tensor) and first.ndim == 3:
            candidates.append(("last", first.detach()))  # (Bp, 77, D) last_hidden_state
        layers = getattr(output, "hidden_states", None)
        if layers:
            candidates += [(i - len(layers), h.detach()) for i, h in enumerate(layers)]  # (Bp, 77, D) each
        call["candidates"] = candidates

    def _on_token_embedding(self, k, module, inputs, output):
        call = self._last_call(k, "token")
        if call is not None:
            call["token"] = output.detach().to("cpu", torch.float32)  # (Bp, 77, D)

    def _on_unet_input(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]  # (2B|B, C_in, h, w) scaled model input
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        hidden = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]  # (2B|B, 77, D)
        if self.count == 0:
            self._start(sample, hidden, kwargs.get("added_cond_kwargs"))
        plan = self.plan
        index = self.count
        x_t = sample[:, : plan["channels"]]  # (2B|B, C, h, w) the latent part (inpaint/depth add channels)
        self.pending = {"x_t": x_t, "timestep": timestep, "index": index}
        if self.attn is not None:
            active = index in plan["attention_steps"]
            self.attn.begin_step(active, plan["cond"], plan["latent_hw"])

    def _on_unet_output(self, module, args, output):
        noise = output[0]  # (2B|B, C, h, w) model output (ε or v)
        self._record_step(noise)
        self.count += 1

    def _on_vae_decode(self, module, args):
        if self.decoding_preview or self.count == 0:
            return
        scaling = self.pipe.vae.config.scaling_factor
        self.final_parts.append((args[0].detach() * scaling).to("cpu", torch.float32))  # (B, C, h, w)

    # -- the work -------------------------------------------------------------------------------

    def _start(self, sample: torch.Tensor, hidden: torch.Tensor, added: dict | None = None) -> None:
        """First U-Net call: everything is known now — plan the memory before recording a step."""
        pipe, run = self.pipe, self.run
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False))
        total = sample.shape[0]
        if cfg and total % 2:
            raise RuntimeError(f"classifier-free guidance is on but the U-Net batch ({total}) is odd")
        batch = total // 2 if cfg else total
        guidance = getattr(pipe, "guidance_scale", None)
        if guidance is not None and not math.isfinite(float(guidance)):  # inf: NaN latents; nan: guidance silently off
            raise ValueError(f"guidance_scale must be a finite number (<= 1 turns guidance off), got {guidance}")
        scheduler = pipe.scheduler
        run.scheduler = type(scheduler).__name__
        run.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        run.guidance_scale = float(pipe.guidance_scale) if cfg else None
        self._tokens(batch, cfg, hidden)
        for call in self.text_calls:
            call.pop("candidates", None)  # only needed to tell prompt from negative prompt, and the layer
        self._added_conditioning(added, batch, cfg)
        n_steps = getattr(pipe, "num_timesteps", None) or len(scheduler.timesteps)  # the loop's length
        self.plan = _plan(self.options, batch, cfg, tuple(sample.shape[-2:]), pipe, n_steps, run)
        self.plan["cond"] = slice(batch, None) if cfg else slice(None)
        self.plan["cfg"] = cfg
        sigmas = getattr(scheduler, "sigmas", None)
        self.plan["sigmas"] = sigmas.detach().to("cpu", torch.float64) if sigmas is not None else None
        # schedulers in the σ (variance-exploding) view scale the model input by 1/sqrt(σ²+1)
        self.plan["ve"] = sigmas is not None and float(scheduler.init_noise_sigma) != 1.0
        self.plan["alphas_cumprod"] = scheduler.alphas_cumprod.to(sample.device)
        self.plan["hidden"] = hidden
        if self.attn is not None:
            labels, lengths = _slot_labels(run.tokens, run.tokens_2)
            pad_mask = torch.zeros(batch, hidden.shape[1])
            for b, length in enumerate(lengths):
                pad_mask[b, length:] = 1.0
            self.plan["pad_mask"] = pad_mask.to(sample.device)
            if labels:
                run.attention.tokens = [row[: self.plan["keep"]] for row in labels]
                run.attention.lengths = lengths
            else:  # prompt_embeds passed in: positions without token strings
                run.attention.tokens = [[f"#{p}" for p in range(self.plan["keep"])]] * batch
                run.attention.lengths = [self.plan["keep"]] * batch
            run.attention.resolution = self.plan["attention_hw"]

    def _tokens(self, batch: int, cfg: bool, hidden: torch.Tensor) -> None:
        """Token records from the text encoder calls, each matched to the prompt or the negative prompt
        (per text encoder: SDXL has two), and which layer of each encoder the U-Net was given."""
        run = self.run
        if not self.text_calls:  # prompt_embeds were passed in: no tokens to show
            return
        prompt_calls, negative_calls = self._text_roles(batch, cfg, hidden)
        known_prompts, known_negatives = self.known_texts or (None, None)
        for k, (encoder_name, _) in enumerate(self.encoders):
            tokenizer = self._tokenizer(k)
            for calls, known, what, half in ((prompt_calls, known_prompts, "prompt", "cond"), (negative_calls, known_negatives, "negative prompt", "uncond")):
                call = calls[k] if calls else None
                if call is None or tokenizer is None:
                    continue
                per_image = max(1, batch // call["ids"].shape[0])
                texts = call["texts"] if call["texts"] is not None else known
                rows = self._token_rows(tokenizer, call["ids"], texts, what, per_image, warn=k == 0)
                token = call["token"].repeat_interleave(per_image, 0) if "token" in call else None  # (B, 77, D)
                name = ("tokens", "token") if k == 0 else ("tokens_2", "token_2")
                if what == "prompt":
                    setattr(run, name[0], rows)
                    setattr(run.embeddings, name[1], token)
                else:
                    setattr(run, "negative_" + name[0], rows)
                    setattr(run.embeddings, name[1] + "_uncond", token)
        parts = self._parts(hidden)
        for k, part in enumerate(parts):
            call = (prompt_calls or [None] * len(parts))[k]
            if part is not None and call is not None:
                part.layer = self._matching_layer(call, part, hidden[batch:] if cfg else hidden, batch)
        run.embeddings.parts = [p for p in parts if p is not None]

    def _parts(self, hidden: torch.Tensor) -> list[TextPart | None]:
        """Which channels of the U-Net's text input each text encoder fills (concatenated in order), or
        [None …] when the widths don't add up to the U-Net's."""
        widths = [getattr(self.pipe, name).config.hidden_size for name, _ in self.encoders]
        if sum(widths) != hidden.shape[-1]:
            return [None] * len(widths)
        starts = [sum(widths[:k]) for k in range(len(widths))]
        return [TextPart(name, start, width) for (name, _), start, width in zip(self.encoders, starts, widths)]

    @staticmethod
    def _matching_layer(call: dict, part: TextPart, half: torch.Tensor, batch: int):
        """The label of the first of this call's outputs that equals the U-Net's text input (its part of it)."""
        target = half[..., part.start : part.start + part.width]  # (B, 77, width)
        for label, out in call.get("candidates", []):
            if batch % out.shape[0]:
                continue
            out = out.repeat_interleave(batch // out.shape[0], 0).to(target.device, target.dtype)
            if out.shape == target.shape and torch.equal(out, target):
                return label
        return None

    def _text_roles(self, batch: int, cfg: bool, hidden: torch.Tensor) -> tuple[list | None, list | None]:
        """([the prompt's call per text encoder], [the negative prompt's]), None for one passed in as embeddings.

        The pipeline encodes the prompt first (with every text encoder in turn), then (with guidance)
        the negative prompt, and skips either when its embeddings are passed in (`prompt_embeds=`,
        `negative_prompt_embeds=`; SDXL also skips the negative prompt when there is none and its
        `force_zeros_for_empty_prompt` is set: the unconditional input is all zeros). So with guidance
        on and a single call per encoder, its outputs are compared with both halves of the text input
        the U-Net receives (hidden: (2B, 77, D), negative half first).
        """
        per_encoder = [[c for c in self.text_calls if c["encoder"] == k] for k in range(len(self.encoders))]
        if any(not calls for calls in per_encoder):
            per_encoder = [calls or [None] for calls in per_encoder]
        if not cfg:
            return [calls[0] for calls in per_encoder], None
        if all(len(calls) >= 2 for calls in per_encoder):
            return [calls[0] for calls in per_encoder], [calls[1] for calls in per_encoder]
        if all(len(calls) == 1 for calls in per_encoder):
            parts = self._parts(hidden)
            for k, part in enumerate(parts):
                call = per_encoder[k][0]
                if part is None or call is None:
                    continue
                is_negative = self._matching_layer(call, part, hidden[:batch], batch) is not None
                is_prompt = self._matching_layer(call, part, hidden[batch:], batch) is not None
                if is_prompt != is_negative:
                    calls = [c[0] for c in per_encoder]
                    return (calls, None) if is_prompt else (None, calls)
        warnings.warn(
            "the pipeline encoded one text but its output matches neither or both halves of the U-Net's text input; "
            "tokens are not recorded (was clip_skip used together with prompt_embeds or negative_prompt_embeds?)",
            stacklevel=2,
        )
        return None, None

    def _added_conditioning(self, added: dict | None, batch: int, cfg: bool) -> None:
        """SDXL: the pooled text embedding and the micro-conditioning numbers the U-Net receives."""
        if not added:
            return
        run = self.run
        pooled, time_ids = added.get("text_embeds"), added.get("time_ids")  # (2B|B, P), (2B|B, 6 or 5)
        host = _to_host({k: v for k, v in (("pooled", pooled), ("time_ids", time_ids)) if isinstance(v, torch.Tensor)})
        if "pooled" in host:
            run.embeddings.pooled = host["pooled"][batch:] if cfg else host["pooled"]
            run.embeddings.pooled_uncond = host["pooled"][:batch] if cfg else None
        if "time_ids" in host:
            rows = [_micro_conditioning(row) for row in host["time_ids"].tolist()]
            run.micro_conditioning = rows[batch:] if cfg else rows
            run.micro_conditioning_uncond = rows[:batch] if cfg else []

    def _token_rows(self, tokenizer, ids, texts, what, per_image, warn=True) -> list[Tokens]:
        """One Tokens per row of `ids`; `texts` (one per row, or None) give the cut tokens.
        `warn`: say what was cut (SDXL: once, for the first tokenizer; the second cuts the same text)."""
        eos = tokenizer.eos_token_id
        rows = []
        for r, row in enumerate(ids.tolist()):
            ends = [i for i, token_id in enumerate(row) if token_id == eos]
            length = ends[0] + 1 if ends else len(row)
            tok = Tokens(ids=row, strings=tokenizer.convert_ids_to_tokens(row), length=length, filled=length == len(row))
            if texts is not None and r < len(texts):
                full = tokenizer(texts[r], verbose=False).input_ids  # untruncated, unpadded: [start, ..., end]
                tok.cut = tokenizer.convert_ids_to_tokens(full[len(row) - 1 : -1])
            if tok.cut and warn:
                warnings.warn(f"{what} {r} is longer than {len(row) - 2} tokens; cut: {' '.join(tok.cut)}", stacklevel=2)
            elif tok.filled and texts is None and warn:
                warnings.warn(
                    f"{what} {r} fills all {len(row) - 2} token slots; any text beyond them was cut "
                    f"(the last kept token is {tok.strings[-2]!r})",
                    stacklevel=2,
                )
            rows += [tok] * per_image
        return rows

    def _alpha_bar(self, timestep, index: int, device) -> tuple[torch.Tensor, float | None]:
        """ᾱ for this step: from the scheduler's σ where it has one, else from its ᾱ table."""
        plan, scheduler = self.plan, self.pipe.scheduler
        if plan["ve"]:
            # The σ this evaluation ran at, read from how the scheduler scaled the U-Net's input:
            # x_in = x / sqrt(σ² + 1). Second-order samplers evaluate between the entries of their σ
            # table (KDPM2 at an interpolated σ, Heun at the next σ), so no table lookup is right
            # for every sampler. The scheduler's step index is already set for this evaluation.
            probe = torch.ones((), dtype=torch.float32 if scheduler.sigmas.device.type == "mps" else torch.float64)
            scale = float(scheduler.scale_model_input(probe, timestep))
            sigma = math.sqrt(max(0.0, 1.0 / scale**2 - 1.0))
            return torch.tensor(float(alpha_bar_from_sigma_ve(sigma)), device=device), sigma
        if plan["sigmas"] is not None:
            i = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else (getattr(scheduler, "begin_index", None) or 0)
            sigma = float(plan["sigmas"][i])
            return torch.tensor(float(alpha_bar_from_sigma_ve(sigma)), device=device), sigma
        t = torch.as_tensor(timestep, device=device).long()
        return plan["alphas_cumprod"][t].float(), None

    def _record_step(self, noise: torch.Tensor) -> None:
        plan, pipe, run = self.plan, self.pipe, self.run
        index, x_t = self.pending["index"], self.pending["x_t"]
        cfg, device = plan["cfg"], noise.device
        alpha_bar, sigma_ve = self._alpha_bar(self.pending["timestep"], index, device)
        if cfg:
            noise_uncond, noise_cond = noise.chunk(2)  # (B, C, h, w) each
            guided = noise_uncond + pipe.guidance_scale * (noise_cond - noise_uncond)  # the pipeline's formula
            rescale = getattr(pipe, "guidance_rescale", 0.0)
            if rescale > 0.0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                guided = rescale_noise_cfg(guided, noise_cond, guidance_rescale=rescale)
            x_t = x_t[plan["batch"] :]  # both halves carry the same latent
        else:
            noise_uncond, noise_cond, guided = None, noise, noise
        x0 = predict_x0(x_t.float(), guided.float(), alpha_bar, run.prediction_type)  # (B, C, h, w)
        clip = self.pipe.scheduler.config.get("clip_sample", False)
        if clip:
            limit = self.pipe.scheduler.config.get("clip_sample_range", 1.0)
            x0 = x0.clamp(-limit, limit)
        latent_in = x_t * math.sqrt(sigma_ve**2 + 1) if plan["ve"] else x_t  # undo scale_model_input

        # everything this step keeps goes to the host in one copy
        keep_tensors = index in plan["tensor_steps"]
        parts: dict[str, torch.Tensor] = {"scalars": torch.stack([torch.as_tensor(self.pending["timestep"], device=device).float().reshape(()), alpha_bar.reshape(())])}
        if keep_tensors:
            parts.update(latent_in=latent_in, noise_cond=noise_cond, x0=x0)
            if cfg:
                parts.update(noise_uncond=noise_uncond, noise_guided=guided)
        if index == 0:
            hidden = plan["hidden"]
            parts["hidden"] = hidden[plan["batch"] :] if cfg else hidden
            if cfg:
                parts["hidden_uncond"] = hidden[: plan["batch"]]
        if self.attn is not None:
            maps = self.attn.end_step(plan["attention_hw"], plan["keep"], plan["pad_mask"])
            if maps is not None:
                parts["attention"], parts["padding"] = maps
        last = index == plan["n_steps"] - 1
        if plan["preview_every"] and (index % plan["preview_every"] == 0 or last):
            parts["preview"] = self._preview(x0)
        host = _to_host(parts)

        timestep, a = host.pop("scalars").tolist()
        step = Step(index=index, timestep=timestep, alpha_bar=a, sigma=math.sqrt(max(0.0, 1.0 - a)))
        if keep_tensors:
            step.latent_in, step.noise_cond, step.x0 = host["latent_in"], host["noise_cond"], host["x0"]
            step.noise_uncond = host.get("noise_uncond")
            step.noise_guided = host.get("noise_guided", step.noise_cond)
        if run.steps and run.steps[-1].index == index - 1 and run.steps[-1].latent_in is not None:
            run.steps[-1].latent_out = step.latent_in
        run.steps.append(step)
        if "hidden" in host:
            run.embeddings.hidden = host["hidden"]
            run.embeddings.hidden_uncond = host.get("hidden_uncond")
        if "attention" in host:
            run.attention.per_step.append(host["attention"])
            run.attention.padding_per_step.append(host["padding"])
            run.attention.steps.append(index)
        if "preview" in host:
            run.previews.append(Preview(step=index, images=host["preview"]))
        if index == 0:
            del plan["hidden"]

    @torch.no_grad()
    def _preview(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 3, H', W') in [0, 1]: x0 decoded by the pipeline's VAE at preview size (on the device)."""
        vae = self.pipe.vae
        z = x0
        if tuple(z.shape[-2:]) != self.plan["preview_latent_hw"]:
            z = F.interpolate(z, size=self.plan["preview_latent_hw"], mode="area")  # (B, C, h', w')
        self.decoding_preview = True
        try:
            image = vae.decode(z.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]  # (B, 3, H', W')
        finally:
            self.decoding_preview = False
        return (image.float() / 2 + 0.5).clamp(0, 1)

    def finish(self) -> None:
        """After the call: the final latent and the per-resolution attention means."""
        run, plan = self.run, self.plan
        if plan is None:
            return
        if self.final_parts and run.steps and run.steps[-1].latent_in is not None:
            final = torch.cat(self.final_parts)
            if final.shape == run.steps[-1].latent_in.shape:
                run.steps[-1].latent_out = final
            else:
                run.reductions.append(f"final latent not recorded: the VAE decoded it in tiles ({tuple(final.shape)})")
        if self.attn is not None and plan["attention_steps"]:
            silent = self.attn.silent_layers()
            if silent:
                warnings.warn(
                    f"{len(silent)} of {len(self.attn.layers)} cross-attention layers recorded no attention map "
                    f"({', '.join(silent)}): their attention processor never called the to_q/to_k (or fused to_kv) "
                    "projections the trace observes, so run.attention "
                    + ("is empty" if len(silent) == len(self.attn.layers) else "averages the other layers only"),
                    RuntimeWarning,
                    stacklevel=3,
                )
        if self.attn is not None:
            run.attention.layers = dict(self.attn.layer_res)
            run.attention.layer_calls = dict(self.attn.layer_calls)
            for res, maps, padding in self.attn.finish(plan["keep"], plan["pad_mask"]):
                host = _to_host({"maps": maps, "padding": padding})
                run.attention.per_resolution[res] = host["maps"]
                run.attention.padding_per_resolution[res] = host["padding"]


def _encoders(pipe) -> list[tuple[str, str]]:
    """(text encoder, tokenizer) attribute names of the text encoders a pipeline has, in the order their
    outputs are concatenated for the U-Net: SD 1.x/2.x one, SDXL base two, the SDXL refiner only the second."""
    return [(e, t) for e, t in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")) if getattr(pipe, e, None) is not None]


def _slot_labels(tokens: list, tokens_2: list) -> tuple[list, list]:
    """([label per slot] per image, [length] per image) for the attention maps.

    Slot p of the U-Net's text input carries token p of each tokenizer (SDXL: both, side by side). The
    label is the token string; where SDXL's two tokenizers disagree (a different `prompt_2`) both are
    given, "first | second", up to the longer prompt's end token.
    """
    if not tokens:
        tokens, tokens_2 = tokens_2, []
    if not tokens_2:
        return [list(tok.strings) for tok in tokens], [tok.length for tok in tokens]
    labels, lengths = [], []
    for a, b in zip(tokens, tokens_2):
        length = max(a.length, b.length)
        labels.append([x if x == y or p >= length else f"{x} | {y}" for p, (x, y) in enumerate(zip(a.strings, b.strings))])
        lengths.append(length)
    return labels, lengths


def _micro_conditioning(row: list[float]) -> dict:
    """SDXL's added time ids, read back into what they mean (diffusers' _get_add_time_ids order)."""
    values = [int(round(v)) for v in row]
    if len(row) == 6:  # base: original_size + crops_coords_top_left + target_size
        return {"original_size": tuple(values[0:2]), "crops_coords_top_left": tuple(values[2:4]), "target_size": tuple(values[4:6])}
    if len(row) == 5:  # refiner: original_size + crops_coords_top_left + aesthetic_score
        return {"original_size": tuple(values[0:2]), "crops_coords_top_left": tuple(values[2:4]), "aesthetic_score": float(row[4])}
    return {"time_ids": tuple(row)}


def _to_host(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One device→host copy for many tensors: flatten, concatenate, copy, split back (float32 CPU)."""
    names = list(parts)
    flat = torch.cat([parts[n].detach().reshape(-1).float() for n in names]).to("cpu")
    out, offset = {}, 0
    for n in names:
        size = parts[n].numel()
        out[n] = flat[offset : offset + size].view(parts[n].shape)
        offset += size
    return out


def _every(n_steps: int, k: int) -> set[int]:
    """Step indices 0, k, 2k, … and always the last."""
    return set(range(0, n_steps, k)) | {n_steps - 1}


def _plan(options: _Options, batch: int, cfg: bool, latent_hw, pipe, n_steps: int, run: Trace) -> dict:
    """Decide what to keep so the trace fits `budget_bytes`; record every reduction in `run.reductions`."""
    h, w = latent_hw
    channels = pipe.unet.config.out_channels
    vae_factor = pipe.vae_scale_factor  # pixels per latent cell along each side
    hidden_width = pipe.unet.config.cross_attention_dim
    keep = max((tok.length for tok in run.tokens + run.tokens_2), default=77)
    budget = options.budget_bytes

    att_hw = (h, w)
    while max(att_hw) > options.attention_size:
        att_hw = (math.ceil(att_hw[0] / 2), math.ceil(att_hw[1] / 2))
    levels = len(pipe.unet.config.block_out_channels)
    native = [(math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(levels)]
    state = {
        "att_hw": att_hw,
        "att_every": 1,
        "preview_every": options.preview_every,
        "preview_px": options.preview_size,
        "tensor_every": 1,
        "attention": options.attention,
    }

    def preview_latent_hw(px):
        scale = min(1.0, px / (max(h, w) * vae_factor))
        return (max(1, round(h * scale)), max(1, round(w * scale)))

    def attention_bytes():
        if not state["attention"]:
            return 0
        n = len(_every(n_steps, state["att_every"]))
        per_step = batch * (keep + 1) * state["att_hw"][0] * state["att_hw"][1] * 4
        aggregate = sum(batch * (keep + 1) * a * b * 4 for a, b in native)
        return n * per_step + aggregate

    def total_bytes():
        latent = batch * channels * h * w * 4
        n_tensors = 5 if cfg else 3  # latent_in, noise_cond, x0 (+ noise_uncond, noise_guided)
        steps = len(_every(n_steps, state["tensor_every"])) * (n_tensors * latent + 8) + latent + n_steps * 8
        embeddings = (4 if cfg else 2) * batch * 77 * hidden_width * 4  # token (≤ hidden width in total) + hidden
        previews = 0
        if state["preview_every"]:
            ph, pw = preview_latent_hw(state["preview_px"])
            previews = len(_every(n_steps, state["preview_every"])) * batch * 3 * ph * pw * vae_factor**2 * 4
        return steps + embeddings + previews + attention_bytes()

    def shrink_attention():
        if max(state["att_hw"]) <= 4:
            return False
        state["att_hw"] = (math.ceil(state["att_hw"][0] / 2), math.ceil(state["att_hw"][1] / 2))
        return True

    def thin(key, limit):
        def step():
            if not state[key] or state[key] >= limit:
                return False
            state[key] *= 2
            return True

        return step

    def shrink_previews():
        if not state["preview_every"] or state["preview_px"] <= 16:
            return False
        state["preview_px"] //= 2
        return True

    def drop_previews():
        if not state["preview_every"]:
            return False
        state["preview_every"] = 0
        return True

    def drop_attention():
        if not state["attention"]:
            return False
        state["attention"] = False
        return True

    while state["attention"] and attention_bytes() > budget // 4 and shrink_attention():
        pass
    while state["attention"] and attention_bytes() > budget // 4 and thin("att_every", n_steps)():
        pass
    ladder = [shrink_attention, thin("att_every", n_steps), thin("preview_every", n_steps), shrink_previews,
              thin("tensor_every", n_steps), drop_previews, drop_attention]  # fmt: skip
    for reduce in ladder:
        while total_bytes() > budget and reduce():
            pass

    reductions = run.reductions
    if state["attention"] and state["att_hw"] != att_hw:
        reductions.append(f"attention maps at {state['att_hw'][0]}×{state['att_hw'][1]} instead of {att_hw[0]}×{att_hw[1]}")
    if state["attention"] and state["att_every"] > 1:
        reductions.append(f"attention maps kept every {state['att_every']} steps (and the last)")
    if options.attention and not state["attention"]:
        reductions.append("attention maps not kept at all")
    if options.preview_every and not state["preview_every"]:
        reductions.append("previews not kept at all")
    elif state["preview_every"] != options.preview_every:
        reductions.append(f"previews every {state['preview_every']} steps instead of {options.preview_every}")
    if state["preview_every"] and state["preview_px"] != options.preview_size:
        reductions.append(f"previews at {state['preview_px']} px instead of {options.preview_size}")
    if state["tensor_every"] > 1:
        reductions.append(f"step tensors kept every {state['tensor_every']} steps (and the last); scalars for all")
    need = total_bytes()
    if need > budget:
        reductions.append(f"budget of {budget} bytes is below the minimum the trace needs ({need} bytes)")
        warnings.warn(f"trace budget {budget} bytes is too small; keeping the minimum ({need} bytes)", stacklevel=3)
    if reductions:
        warnings.warn("trace reduced to fit its memory budget: " + "; ".join(reductions), stacklevel=3)

    return {
        "batch": batch,
        "channels": channels,
        "latent_hw": (h, w),
        "n_steps": n_steps,
        "keep": keep,
        "attention_hw": state["att_hw"],
        "attention_steps": _every(n_steps, state["att_every"]) if state["attention"] else set(),
        "tensor_steps": _every(n_steps, state["tensor_every"]),
        "preview_every": state["preview_every"],
        "preview_latent_hw": preview_latent_hw(state["preview_px"]),
        "estimate": need,
    }
