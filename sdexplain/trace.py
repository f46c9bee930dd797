"""Record what a Stable Diffusion pipeline does, step by step, without changing what it does.

    with sdexplain.trace(pipe) as run:
        images = pipe("a red circle", num_inference_steps=20).images

works for diffusers' StableDiffusionPipeline, ...Img2ImgPipeline, ...InpaintPipeline and
...Depth2ImgPipeline, any batch (lists of prompts, `num_images_per_prompt`), any size, with or
without negative prompt, with classifier-free guidance on or off. The image is bit-for-bit the one
the pipeline makes untraced: only public hook points are used (forward hooks / pre-hooks on the
text encoder, its token embedding, the U-Net, the cross-attention projections and the VAE
decoder's input, plus a logging handler that hears the pipeline's own truncation warning) and
the hooks only read. All hooks are removed when the `with` block ends, also when it raises.
One trace records one pipeline call; nesting traces of the same U-Net is refused.

What `run` (a `Trace`) holds — everything on the CPU, float32:

    run.tokens            [Tokens] one per image in the batch (prompt rows repeated per image)
    run.negative_tokens   [Tokens] the same for the negative / unconditional prompt ([] without CFG)
        Tokens.ids (77 ints), .strings (77 token strings), .length (positions up to and including
        the first end token), .words (the real words), .cut (token strings that did not fit in 75),
        .filled (all 75 slots used)
    run.embeddings        Embeddings
        .token          (B, 77, D) the text encoder's input (token) embeddings of the prompt
        .token_uncond   (B, 77, D) of the negative prompt, or None
        .hidden         (B, 77, D) the encoder hidden states the U-Net receives (conditional half)
        .hidden_uncond  (B, 77, D) or None without CFG
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
    run.debug             {"attention_row_sums": {layer: (min, max)}} with debug=True

Memory: `budget_bytes` (default 256 MiB) is checked before the first step, once batch, latent
size, number of steps and prompt length are known; attention maps get at most a quarter of it.
Over budget the trace lowers the attention resolution, keeps attention / previews / step tensors
only every k-th step, and says so in `run.reductions`. Each step costs one device→host copy.
"""

from __future__ import annotations

import ast
import logging
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sdexplain.attention import AttentionMaps, CrossAttentionRecorder
from sdexplain.diffusion import alpha_bar_from_sigma_ve, predict_x0

MiB = 2**20
DEFAULT_BUDGET = 256 * MiB
TRUNCATION_MESSAGE = "The following part of your input was truncated because CLIP can only handle sequences up to"

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
class Embeddings:
    token: torch.Tensor | None = None  # (B, 77, D) text encoder input embeddings, prompt
    token_uncond: torch.Tensor | None = None  # (B, 77, D) negative prompt
    hidden: torch.Tensor | None = None  # (B, 77, D) what the U-Net receives, prompt
    hidden_uncond: torch.Tensor | None = None  # (B, 77, D) negative prompt


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
    embeddings: Embeddings = field(default_factory=Embeddings)
    steps: list = field(default_factory=list)  # [Step]
    attention: AttentionMaps = field(default_factory=AttentionMaps)
    previews: list = field(default_factory=list)  # [Preview]
    reductions: list = field(default_factory=list)  # [str]
    pipeline: str = ""  # pipeline class name
    scheduler: str = ""  # scheduler class name
    prediction_type: str = "epsilon"
    guidance_scale: float | None = None  # None without CFG
    debug: dict = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the trace holds."""
        out = [t for t in vars(self.embeddings).values() if t is not None]
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
    debug: bool = False,
):
    """Context manager recording one pipeline call into a `Trace` (see the module docstring).

    attention_size: longest side of the common attention map grid (capped at the latent size).
    preview_every: decode a preview every k steps (and at the last); 0 turns previews off.
    preview_size: longest side of previews in pixels.
    budget_bytes: the most tensor bytes the trace may keep.
    debug: also store the raw row sums of one attention map per layer (they must be 1).
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
    return TraceContext(pipe, _Options(attention, attention_size, preview_every, preview_size, budget_bytes, debug), texts=None)


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
    debug: bool


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


class _TruncationListener(logging.Handler):
    """Hears the pipeline's own "part of your input was truncated" warning (it knows the prompt text)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.removed: list[list[str]] | None = None  # per prompt row: the decoded text that was cut

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(TRUNCATION_MESSAGE):
            return
        text = message.split("tokens: ", 1)[1]
        try:
            removed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            removed = [text]  # an unexpected format: keep the raw text rather than nothing
        self.removed = [removed] if isinstance(removed, str) else list(removed)


class _Recorder:
    """Owns the hooks of one traced call and fills `self.run`."""

    def __init__(self, pipe, options: _Options):
        self.pipe = pipe
        self.options = options
        self.run = Trace(pipeline=type(pipe).__name__)
        self.handles: list = []
        self.attn = CrossAttentionRecorder(pipe.unet, debug=options.debug) if options.attention else None
        self.listener = _TruncationListener()
        self.logger = logging.getLogger(type(pipe).__module__)
        self.known_texts: tuple[list[str], list[str] | None] | None = None  # set by generate()
        self.text_calls: list[dict] = []  # one per text encoder call: {"ids": (Bp, 77), "token": (Bp, 77, D)}
        self.count = 0  # U-Net calls so far
        self.plan: dict | None = None
        self.pending: dict = {}  # tensors from the current U-Net pre-hook
        self.final_parts: list[torch.Tensor] = []  # VAE decoder inputs (the final latent)
        self.decoding_preview = False

    # -- hooks ----------------------------------------------------------------------------------

    def attach(self) -> None:
        pipe = self.pipe
        if getattr(pipe, "text_encoder", None) is not None:
            self.handles.append(pipe.text_encoder.register_forward_pre_hook(self._on_text_encoder, with_kwargs=True))
            embedding = pipe.text_encoder.get_input_embeddings()
            self.handles.append(embedding.register_forward_hook(self._on_token_embedding))
        self.handles.append(pipe.unet.register_forward_pre_hook(self._on_unet_input, with_kwargs=True))
        self.handles.append(pipe.unet.register_forward_hook(self._on_unet_output))
        vae_input = pipe.vae.post_quant_conv if getattr(pipe.vae, "post_quant_conv", None) is not None else pipe.vae.decoder
        self.handles.append(vae_input.register_forward_pre_hook(self._on_vae_decode))
        if self.attn is not None:
            self.attn.attach()
        self.logger.addHandler(self.listener)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.attn is not None:
            self.attn.remove()
        self.logger.removeHandler(self.listener)

    def _on_text_encoder(self, module, args, kwargs):
        if self.count:
            raise RuntimeError("one trace records one pipeline call; open a new `with trace(pipe)` for the next call")
        ids = args[0] if args else kwargs["input_ids"]  # (Bp, 77)
        self.text_calls.append({"ids": ids.detach().to("cpu")})

    def _on_token_embedding(self, module, inputs, output):
        if self.text_calls and "token" not in self.text_calls[-1]:
            self.text_calls[-1]["token"] = output.detach().to("cpu", torch.float32)  # (Bp, 77, D)

    def _on_unet_input(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]  # (2B|B, C_in, h, w) scaled model input
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        hidden = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]  # (2B|B, 77, D)
        if self.count == 0:
            self._start(sample, hidden)
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

    def _start(self, sample: torch.Tensor, hidden: torch.Tensor) -> None:
        """First U-Net call: everything is known now — plan the memory before recording a step."""
        pipe, run = self.pipe, self.run
        cfg = bool(getattr(pipe, "do_classifier_free_guidance", False))
        total = sample.shape[0]
        if cfg and total % 2:
            raise RuntimeError(f"classifier-free guidance is on but the U-Net batch ({total}) is odd")
        batch = total // 2 if cfg else total
        scheduler = pipe.scheduler
        run.scheduler = type(scheduler).__name__
        run.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        run.guidance_scale = float(pipe.guidance_scale) if cfg else None
        self._tokens(batch, cfg)
        n_steps = getattr(pipe, "_num_timesteps", None) or len(scheduler.timesteps)
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
            pad_mask = torch.zeros(batch, hidden.shape[1])
            for b, tok in enumerate(run.tokens):
                pad_mask[b, tok.length :] = 1.0
            self.plan["pad_mask"] = pad_mask.to(sample.device)
            if run.tokens:
                run.attention.tokens = [tok.strings[: self.plan["keep"]] for tok in run.tokens]
                run.attention.lengths = [tok.length for tok in run.tokens]
            else:  # prompt_embeds passed in: positions without token strings
                run.attention.tokens = [[f"#{p}" for p in range(self.plan["keep"])]] * batch
                run.attention.lengths = [self.plan["keep"]] * batch
            run.attention.resolution = self.plan["attention_hw"]

    def _tokens(self, batch: int, cfg: bool) -> None:
        """Token records from the text encoder calls (prompt first, then the negative prompt)."""
        run, tokenizer = self.run, getattr(self.pipe, "tokenizer", None)
        calls = self.text_calls
        if not calls or tokenizer is None:  # prompt_embeds were passed in: no tokens to show
            return
        prompt_call = calls[0]
        negative_call = calls[1] if cfg and len(calls) > 1 else None
        rows = prompt_call["ids"].shape[0]
        per_image = max(1, batch // rows)
        prompt_texts, negative_texts = self.known_texts or (None, None)
        run.tokens = self._token_rows(tokenizer, prompt_call["ids"], prompt_texts, self.listener.removed, "prompt", per_image)
        if "token" in prompt_call:
            run.embeddings.token = prompt_call["token"].repeat_interleave(per_image, 0)  # (B, 77, D)
        if negative_call is not None:
            run.negative_tokens = self._token_rows(tokenizer, negative_call["ids"], negative_texts, None, "negative prompt", per_image)
            if "token" in negative_call:
                run.embeddings.token_uncond = negative_call["token"].repeat_interleave(per_image, 0)

    def _token_rows(self, tokenizer, ids, texts, removed, what, per_image) -> list[Tokens]:
        eos = tokenizer.eos_token_id
        specials = set(tokenizer.all_special_tokens)
        rows = []
        for r, row in enumerate(ids.tolist()):
            ends = [i for i, token_id in enumerate(row) if token_id == eos]
            length = ends[0] + 1 if ends else len(row)
            tok = Tokens(ids=row, strings=tokenizer.convert_ids_to_tokens(row), length=length, filled=length == len(row))
            if texts is not None:
                full = tokenizer(texts[r]).input_ids
                tok.cut = tokenizer.convert_ids_to_tokens(full[len(row) - 1 : -1])
            elif removed is not None and r < len(removed):
                tok.cut = [t for t in tokenizer.tokenize(removed[r]) if t not in specials]
            if tok.cut:
                warnings.warn(f"{what} {r} is longer than {len(row) - 2} tokens; cut: {' '.join(tok.cut)}", stacklevel=2)
            elif tok.filled and texts is None and removed is None:
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
        if self.attn is not None:
            run.attention.layers = dict(self.attn.layer_res)
            run.attention.layer_calls = dict(self.attn.layer_calls)
            for res, maps, padding in self.attn.finish(plan["keep"], plan["pad_mask"]):
                host = _to_host({"maps": maps, "padding": padding})
                run.attention.per_resolution[res] = host["maps"]
                run.attention.padding_per_resolution[res] = host["padding"]
            if self.options.debug:
                run.debug["attention_row_sums"] = dict(self.attn.row_sums)


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
    vae_factor = pipe.vae_scale_factor
    hidden_width = pipe.unet.config.cross_attention_dim
    keep = max((tok.length for tok in run.tokens), default=77)
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
        embeddings = (4 if cfg else 2) * batch * 77 * hidden_width * 4
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
