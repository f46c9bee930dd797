"""Writes notebooks/15_webui_knobs.ipynb (unexecuted); then run
`python -m sdexplain.notebook_tools refresh notebooks/15_webui_knobs.ipynb`.

Cell ids are stable (nb15-NN), so notebooks/zh/translations/15_webui_knobs.md keeps matching."""

import nbformat

from sdexplain.notebook_tools import ROOT, new_notebook

NAME = "15_webui_knobs.ipynb"

LEARN = [
    "how the WebUI reads `(word:1.3)`, `[word]`, `BREAK`, `[from:to:when]` and `[a|b]` — and what plain diffusers does with the same text",
    "emphasis: the word's vectors scaled, the mean put back; its cross-attention share and the judge's reading against the weight (measured)",
    "long prompts: 75-token chunks instead of a cut, and what `BREAK` does to the words after it (measured)",
    "prompt editing `[cat:dog:k]` for every k: the early steps decide where the object goes, then what it is (measured)",
    "clip skip on the toy's 2-layer text encoder, and why anime checkpoints expect clip skip 2",
    "hires fix against generating at 2× directly: objects counted both ways; variation seeds as a slerp of two noises",
]

CELLS = [
    ("md", """
The WebUI has settings between the prompt box and the sampler that the earlier notebooks did not
touch: brackets and weights in the prompt, prompts longer than 75 tokens, `BREAK`, prompt editing,
**Clip skip**, **Hires. fix** and **Variation seed**. Here each one is built the WebUI's way and
handed to the *stock* diffusers pipeline: the WebUI's text conditioning goes in as `prompt_embeds`,
a prompt that changes during sampling is switched in diffusers' `callback_on_step_end`, and the
variation noise goes in as `latents`. Nothing inside the pipeline is changed (`tests/test_conditioning.py`
checks that a traced run equals the untraced one, bit for bit).

The sampler is the WebUI's **Euler** (one U-Net call per step, no random kicks, so the seeds
alone decide the images); the sweeps use 10 steps and 8 seeds so the notebook runs in minutes on a CPU.
"""),
    ("code", """
%matplotlib inline
import torch
from sdexplain import conditioning, plots, prompts, webui
from sdexplain import widgets as sdw
from sdexplain.i18n import t

pipe = sdexplain.load_pipeline(MODEL)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = webui.webui_scheduler(pipe, "Euler")
CFG = webui.default_cfg(MODEL)  # the toy's measured default (notebook 09); a real SD: the WebUI's 7
STEPS, SEEDS = 10, range(8)
print(t("sampler: {name} · CFG {cfg:g} · {steps} steps · seeds {first}…{last}").format(name=webui.webui_sampler_name(pipe.scheduler), cfg=CFG, steps=STEPS, first=SEEDS[0], last=SEEDS[-1]))
"""),
    ("md", """
## 1. The prompt, as the WebUI reads it

`prompts.parse_attention` splits a prompt into fragments with weights exactly as the WebUI's own
parser does (its doctests are our tests): `(word)` ×1.1, `((word))` ×1.21, `(word:1.3)` ×1.3,
`[word]` ÷1.1, `\\(` a literal bracket, `BREAK` a marker of its own. `prompts.prompt_schedule` turns
prompt editing and alternation into the plain text used at each step: `[from:to:when]` switches at
step `when` (with a decimal point: a fraction of the steps), `[a|b]` alternates every step.
Plain diffusers reads none of this: brackets, colons and digits are just more tokens.
Sources: AUTOMATIC1111 WebUI wiki, *Features* (Attention/emphasis, Prompt editing, Alternating
Words, BREAK keyword); WebUI `modules/prompt_parser.py` (`parse_prompt_attention`,
`get_learned_conditioning_prompt_schedules`).
"""),
    ("code", """
# NBVAL_CHECK_OUTPUT
EXAMPLE = "a (red:1.3) ((cat)) [on the left] BREAK \\\\(not a weight\\\\)"
print(EXAMPLE)
for text, weight in prompts.parse_attention(EXAMPLE):
    print(f"  {text!r:22} {weight:.4f}")
fragments = prompts.parse_attention(EXAMPLE)
assert fragments[1] == ("red", 1.3) and abs(fragments[3][1] - 1.21) < 1e-12 and fragments[-2] == prompts.BREAK
print()
EDIT = "a [cat:dog:0.5] [red|blue]"
for end, text in prompts.prompt_schedule(EDIT, 6):
    print(t("  up to step {end}: {text!r}").format(end=end, text=text))
kept, cut = conditioning.diffusers_tokens(pipe.tokenizer, "a (red:1.3) cat")
print(t("plain diffusers reads {n} tokens for 'a (red:1.3) cat': {tokens}").format(n=len(kept), tokens=" ".join(kept)))
assert len(kept) > 3  # the brackets and the number are tokens too
"""),
    ("md", """
## 2. Emphasis: `(red:w)`

The WebUI does not touch the words going into the text encoder. It multiplies the encoder's
**output** vector at each weighted position by the weight, then multiplies the whole 77-slot chunk
by one common factor so that its mean is what it was before ("Original" emphasis). So `(red:1.5)`
makes the `red` slot 1.5 × longer *relative to the others*. The mean of the encoder's output is close
to 0, so that common factor is not necessarily a small correction: here it shortens every slot
(printed below), and only the ratio between the slots is what the weight sets.
(compel, the weighting library for diffusers, works differently: its own syntax, down-weighting by
masking the token out and blending, no mean restore — see `sdexplain.conditioning`.)
Sources: WebUI `modules/sd_hijack_clip.py` (`process_tokens`) and `modules/sd_emphasis.py`
(`EmphasisOriginal`); compel's README (github.com/damian0815/compel).
"""),
    ("code", """
# NBVAL_CHECK_OUTPUT
plain, _ = conditioning.encode(pipe, "a red cat", emphasis=False)
weighted, _ = conditioning.encode(pipe, "a (red:1.5) cat")
ratio = (weighted[0].norm(dim=-1) / plain[0].norm(dim=-1))  # per slot: how much longer the vector got
print(t("length ratio, 'red' slot: {red:.3f} · every other slot: {other:.3f} · mean before {before:.4f}, after {after:.4f}").format(
    red=float(ratio[2]), other=float(ratio[1]), before=float(plain.mean()), after=float(weighted.mean())))
assert abs(float(ratio[2]) - 1.5 * float(ratio[1])) < 1e-3 and torch.allclose(ratio[[0, 1, 3]], ratio[1].expand(3), atol=1e-5)
assert abs(float(weighted.mean() - plain.mean())) < 1e-6
assert MODEL != "toy" or float(ratio[1]) < 1  # on the toy the common factor shortens every slot
"""),
    ("md", """
How much the U-Net then looks at the word, and whether the picture shows it: for each weight, the
`red` slot's share of the cross-attention (averaged over pixels, layers and steps) and how often the
judge reads a red object, over 8 seeds. CFG is 1.5 here, below the toy's default, so that the judge
is not already reading red every time at weight 1.
"""),
    ("code", """
if needs_toy(MODEL, "the emphasis curve (the judge reads the colour)", "generate `a (red:w) cat` for a few w and look"):
    from sdexplain.toy.model import Judge
    judge = Judge.load()
    WEIGHTS = [0.5, 0.75, 1.0, 1.25, 1.5]
    curve = webui.emphasis_curve(pipe, judge, "a (red:{w}) cat", 2, "colour", "red", WEIGHTS, SEEDS, steps=STEPS, cfg=1.5)
    for w, a, j in zip(WEIGHTS, curve.attention, curve.judged):
        print(t("weight {w:4}: attention share of 'red' {a:.3f}, judged red {j:.0%}").format(w=w, a=a, j=j))
    assert all(b > a for a, b in zip(curve.attention, curve.attention[1:]))  # strictly rising with the weight
    assert curve.attention[-1] > 3 * curve.attention[0]  # several-fold from 0.5 to 1.5
    assert curve.judged[0] >= curve.judged[-1]  # the judge reads red no less often at 0.5 than at 1.5
    red_cat, _ = conditioning.encode(pipe, "a red cat", emphasis=False)
    blue_cat, _ = conditioning.encode(pipe, "a blue cat", emphasis=False)
    cosine = torch.nn.functional.cosine_similarity(red_cat[0], blue_cat[0], dim=-1)  # per slot
    print(t("cosine of 'a red cat' and 'a blue cat', slot by slot: 'a' {a:.4f} · 'cat' {c:.4f} · end token {e:.4f}").format(a=float(cosine[1]), c=float(cosine[3]), e=float(cosine[4])))
    assert float(cosine[1]) > 0.9999 and float(cosine[3]) < 0.99 and float(cosine[4]) < 0.99  # before the colour word the same; after it, changed
    display(webui.line_plot(WEIGHTS, {t("attention share of 'red'"): curve.attention}, t("emphasis weight w in (red:w)"), t("share"), t("the word's cross-attention share")))
    display(webui.line_plot(WEIGHTS, {t("judged red"): curve.judged}, t("emphasis weight w in (red:w)"), t("share of seeds"), t("what the judge reads"), ylim=(0, 1.05)))
"""),
    ("md", """
The word's attention share rises with every step of the weight, several-fold from 0.5 to 1.5; but
the judge does not follow it: it reads red no less often at 0.5 than at 1.5 (both asserted above).
The weight scales the `red` slot only, and the text encoder is causal — each token's vector is
computed from the tokens before it — so every slot after `red` (`cat`, the end token, the padding)
already carries the colour: the last printout shows the `cat` and end-token slots of "a red cat" and
"a blue cat" differ, while the `a` before the colour word is the same in both. Turning `red` down
leaves the colour in those slots; turning it up moves attention, not necessarily the picture.
Sources: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision" (CLIP), §2.4: masked (causal) self-attention in the text encoder.

## 3. Long prompts and `BREAK`

Plain diffusers keeps the first 75 tokens and cuts the rest. The WebUI cuts the prompt into chunks of
75, gives each its own start and end token, encodes each chunk on its own and concatenates: 77·k
slots for k chunks (if a comma came in the last 20 tokens of a full chunk, the text after it moves to
the next chunk). `BREAK` ends a chunk early. Here a prompt whose description comes after 75 filler
words: diffusers never sees the description, the WebUI's conditioning keeps it in a second chunk.
Sources: AUTOMATIC1111 WebUI wiki, *Features* (Infinite prompt length, BREAK keyword); WebUI
`modules/sd_hijack_clip.py` (`tokenize_line`) and `modules/shared_options.py` ("Prompt word wrap
length limit", `comma_padding_backtrack`, default 20).
"""),
    ("code", """
# NBVAL_CHECK_OUTPUT
LONG = " ".join(["a"] * 75) + " a blue dog on the left"
chunks = conditioning.make_chunks(pipe.tokenizer, LONG)
kept, cut = conditioning.diffusers_tokens(pipe.tokenizer, LONG)
z, _ = conditioning.encode(pipe, LONG)
print(t("WebUI: {k} chunks of {sizes} tokens → conditioning {shape}").format(k=len(chunks), sizes=[c.used for c in chunks], shape=tuple(z.shape)))
print(t("plain diffusers: keeps {kept}, cuts {n}: {cut}").format(kept=len(kept), n=len(cut), cut=" ".join(cut)))
assert z.shape[1] == 154 and len(cut) == 6 and chunks[1].strings[1:7] == cut
"""),
    ("md", """
Does the U-Net read the second chunk? `webui.slot_attention` measures the prompt's share of the
cross-attention on each of the 154 slots during one run (hooks on the query and key projections
read q and k; the shares are computed beside the run). The red line separates the two chunks.
"""),
    ("code", """
if needs_toy(MODEL, "attention over the 154 slots", "webui.slot_attention(pipe, LONG) measures it on any model"):
    shares = webui.slot_attention(pipe, LONG, 0, steps=STEPS, cfg=CFG)
    words = [(s.removesuffix("</w>"), float(shares[78 + i])) for i, s in enumerate(chunks[1].strings[1:7])]
    print(t("share of the attention: chunk 1 {a:.0%}, chunk 2 {b:.0%} (sum {s:.4f}); a filler slot {f:.4f} on average").format(
        a=float(shares[:77].sum()), b=float(shares[77:].sum()), s=float(shares.sum()), f=float(shares[1:76].mean())))
    print(t("chunk 2's words: {w}").format(w=" · ".join(f"{w} {v:.4f}" for w, v in words)))
    assert abs(float(shares.sum()) - 1) < 1e-4 and float(shares[77:].sum()) > 0.25
    assert max(v for _, v in words) > 2 * float(shares[1:76].mean())
    display(webui.slot_figure(shares, [s for c in chunks for s in c.strings]))
"""),
    ("md", """
The attention spreads over both chunks: the second one, six words and its padding, draws more than a
quarter of it, and one of its words draws more than twice what an average filler slot gets (both
asserted above). Nothing was cut, and the U-Net uses what the second chunk holds.
"""),
    ("code", """
if needs_toy(MODEL, "the judge's reading of the long prompt", "generate the long prompt both ways and look"):
    def correct(pictures):
        readings = webui.judge_pictures(judge, pictures)
        return {name: webui.share(readings, name, value) for name, value in (("shape", "dog"), ("colour", "blue"), ("position", "left"))}
    chunked = webui.run(pipe, LONG, SEEDS, steps=STEPS, cfg=CFG)
    plain_pictures = pipe([LONG] * len(SEEDS), num_inference_steps=STEPS, guidance_scale=CFG, latents=webui.noises(pipe, SEEDS)).images
    judged_chunked, judged_plain = correct(chunked), correct(plain_pictures)
    for label, judged in ((t("WebUI chunks"), judged_chunked), (t("plain diffusers"), judged_plain)):
        print(t("{label:16} judged dog {shape:.0%} · blue {colour:.0%} · left {position:.0%}").format(label=label, **judged))
    assert all(judged_chunked[k] > judged_plain[k] for k in judged_chunked)
    display(plots.image_grid(list(chunked[:4]) + list(plain_pictures[:4]), [t("WebUI, seed {s}").format(s=s) for s in SEEDS[:4]] + [t("diffusers, seed {s}").format(s=s) for s in SEEDS[:4]], ncols=4, cell=1.4))
"""),
    ("md", """
The chunked conditioning gets dog, blue and left more often than the cut one on every attribute
(asserted above). Each chunk goes through the text encoder **on its own**, so words after `BREAK`
are encoded without seeing the words before it. On the toy that costs the place: "on the left"
after a `BREAK` no longer belongs to the dog.
"""),
    ("code", """
if needs_toy(MODEL, "BREAK measured by the judge", "compare a prompt with and without BREAK by eye"):
    together = correct(webui.run(pipe, "a blue dog on the left", SEEDS, steps=STEPS, cfg=CFG))
    broken = correct(webui.run(pipe, "a blue dog BREAK on the left", SEEDS, steps=STEPS, cfg=CFG))
    print(t("without BREAK: judged left {a:.0%} · with BREAK: {b:.0%}").format(a=together["position"], b=broken["position"]))
    assert broken["position"] < together["position"]
"""),
    ("md", """
## 4. Prompt editing: `[cat:dog:k]` for every k

`[cat:dog:k]` conditions on "cat" up to step k and on "dog" after it (the WebUI counts the sampler's
model calls from 0, so "cat" is used for calls 0…k). Sweeping k from 0 (dog from the start) to 10
(cat throughout) shows when each attribute is decided: below, the share of seeds judged a cat, and
for `[left:right:k]` the share judged on the left.
Sources: WebUI `modules/prompt_parser.py` (`get_learned_conditioning_prompt_schedules`,
`reconstruct_cond_batch`) and `modules/sd_samplers_cfg_denoiser.py` (the step counter).
"""),
    ("code", """
if needs_toy(MODEL, "the prompt-editing sweep", "try [cat:dog:k] for a few k and look"):
    shape_sweep = webui.editing_sweep(pipe, judge, "a red [cat:dog:{k}] on the left", "shape", ("cat", "dog"), SEEDS, steps=STEPS, cfg=CFG)
    place_sweep = webui.editing_sweep(pipe, judge, "a red cat on the [left:right:{k}]", "position", ("left", "right"), SEEDS, steps=STEPS, cfg=CFG)
    k_place, k_shape = webui.crossing(place_sweep.judged["right"]), webui.crossing(shape_sweep.judged["dog"])
    print(t("the place is decided by step {a:.1f}, the shape by step {b:.1f} (where the second prompt drops below half)").format(a=k_place, b=k_shape))
    print(t("judged cat for k = 0…10: {v}").format(v=" ".join(f"{x:.2f}" for x in shape_sweep.judged["cat"])))
    print(t("judged dog for k = 0…10: {v}").format(v=" ".join(f"{x:.2f}" for x in shape_sweep.judged["dog"])))
    no_dog = next(k for k in range(STEPS + 1) if max(shape_sweep.judged["dog"][k:]) == 0)
    settled = next(k for k in range(STEPS + 1) if shape_sweep.judged["cat"][k:] == shape_sweep.judged["cat"][-1:] * (STEPS + 1 - k)
                   and place_sweep.judged["left"][k:] == place_sweep.judged["left"][-1:] * (STEPS + 1 - k))
    print(t("no seed judged a dog from k = {a} on; from k = {b} on, switching changes nothing the judge reads").format(a=no_dog, b=settled))
    assert k_place < 1 <= k_shape < 3 <= no_dog < settled < STEPS  # place first, then the shape; in between, seeds that are neither
    display(webui.line_plot(shape_sweep.when, {t("judged cat in [cat:dog:k]"): shape_sweep.judged["cat"], t("judged left in [left:right:k]"): place_sweep.judged["left"]},
                            t("k: the step the prompt switches"), t("share of seeds"), t("the first prompt's share against k")))
    display(plots.image_grid([shape_sweep.pictures[k][0] for k in range(0, 11, 2)], [f"k={k}" for k in range(0, 11, 2)], ncols=6, cell=1.3))
"""),
    ("md", """
The place is settled before k = 1 (the first two model calls). The shape is not one switch: most
seeds have left the dog by about k = 2, and no seed is judged a dog after a few more steps, but in
between some end as neither a cat nor a dog (the k = 2 picture below is a plain disc); only from the
last step printed on does a switch change nothing the judge reads (all asserted above). The place is
decided first, the shape after it, and the last steps only refine what is already there. This is why
`[from:to:when]` with a small `when` is used to keep one prompt's composition and another's details.

## 5. Alternation: `[cat|dog]`

`[cat|dog]` conditions on "cat" and "dog" in turn; in the WebUI's step counting the first two model
calls both use "cat", then it alternates.
"""),
    ("code", """
if needs_toy(MODEL, "alternation read by the judge", "generate a [cat|dog] prompt and look"):
    ALT = "a red [cat|dog] on the left"
    print(prompts.prompt_schedule(ALT, 4))
    alternated = webui.run(pipe, ALT, SEEDS, steps=STEPS, cfg=CFG)
    shapes = [r["shape"] for r in webui.judge_pictures(judge, alternated)]
    print(t("judged shapes: {shapes}").format(shapes=", ".join(shapes)))
    animals = sum(s in ("cat", "dog") for s in shapes)
    print(t("judged a cat or a dog: {n} of {total}").format(n=animals, total=len(shapes)))
    assert "cat" in shapes and "dog" in shapes and len(shapes) - 2 <= animals < len(shapes)
    display(plots.image_grid(alternated[:6], [t("seed {s}").format(s=s) for s in SEEDS[:6]], ncols=6, cell=1.3))
"""),
    ("md", """
Most seeds end as one animal, some as a cat, some as a dog: the alternation shifts which one wins.
Not all of them: the judge reads another shape off one at least (printed above) — a face with neither
the cat's pointed ears nor the dog's hanging ones, the toy's half-cat, half-dog.

## 6. Clip skip

WebUI's **Clip skip** N takes the text encoder's hidden states N−1 layers before the last and passes
them through the encoder's final layer norm (diffusers: `clip_skip = N − 1`). SD 1.x's encoder has 12
layers; the toy's has **2**, so on the toy clip skip 2 means "the output of the first layer": half the
encoder. A model only knows the layer it was trained on: the toy was trained on the last layer.
"""),
    ("code", """
if needs_toy(MODEL, "clip skip measured by the judge", "compare clip skip 1 and 2 by eye"):
    last, _ = conditioning.encode(pipe, "a blue dog on the left", clip_skip=1)
    first, _ = conditioning.encode(pipe, "a blue dog on the left", clip_skip=2)
    cosine = torch.nn.functional.cosine_similarity(last[0, 1:7], first[0, 1:7], dim=-1)
    print(t("cosine between clip skip 1 and 2, per word: {c}").format(c=" ".join(f"{x:.2f}" for x in cosine.tolist())))
    SEEDS16 = range(16)
    adherence = {}
    for skip in (1, 2):
        readings = webui.judge_pictures(judge, webui.run(pipe, "a blue dog on the left", SEEDS16, steps=STEPS, cfg=CFG, clip_skip=skip))
        adherence[skip] = sum(r["shape"] == "dog" and r["colour"] == "blue" and r["position"] == "left" for r in readings) / len(readings)
        print(t("clip skip {n}: all three judged right in {a:.0%} of 16 seeds").format(n=skip, a=adherence[skip]))
    assert adherence[2] < adherence[1] and float(cosine.min()) < 0.99
"""),
    ("md", """
Clip skip 2 changes the vectors and the toy follows its prompt less often (asserted above): it was
never trained on its first layer's output. Anime checkpoints are the mirror case: NovelAI trained its
anime model on the **penultimate** layer of CLIP, and the many checkpoints merged from it (Anything
and its descendants) inherited that, so they expect clip skip 2; SD 1.5 itself was trained on the
last layer (clip skip 1).
Sources: NovelAI, "NovelAI Improvements on Stable Diffusion" (blog, October 2022: conditioning on
the hidden states of CLIP's penultimate layer); AUTOMATIC1111 WebUI wiki, *Features* (clip skip);
WebUI `modules/sd_hijack_clip.py` (`CLIP_stop_at_last_layers`).

## 7. Hires fix

A model makes its best images at its training size; far above it, the U-Net's view covers only part
of the picture and it tends to repeat the subject (the article's "two heads"). **Hires. fix** first
generates at the base size, upscales the image (here a Lanczos pixel upscaler, one of the WebUI's
choices; its default "Latent" upscales the latent instead), then runs image-to-image at the larger
size with the **Denoising strength** (WebUI's default 0.7). The toy's training size is 64×64; below,
128×128 directly against hires fix from 64×64, with the separate objects counted in each image
(`webui.count_objects`: separate regions of object colour, so the grey floor and pale frame the toy
draws at 128×128 do not count).
Sources: AUTOMATIC1111 WebUI wiki, *Features* (Hires. fix); WebUI `modules/ui.py` (hires "Denoising
strength" 0.7, "Upscale by" 2).
"""),
    ("code", """
if needs_toy(MODEL, "objects counted at 2× (hires fix)", "compare a direct 1024×1024 SD 1.5 image with a hires-fixed one by eye"):
    HIRES_PROMPT = "a red cat in the center"
    direct = webui.run(pipe, HIRES_PROMPT, SEEDS, steps=STEPS, cfg=CFG, height=128, width=128)
    base, hires = webui.hires_fix(pipe, HIRES_PROMPT, SEEDS, strength=0.7, steps=STEPS, cfg=CFG)
    counts_direct = [webui.count_objects(p) for p in direct]
    counts_hires = [webui.count_objects(p) for p in hires]
    print(t("objects per image, 128×128 directly: {a}").format(a=counts_direct))
    print(t("objects per image, hires fix 64→128:  {b}").format(b=counts_hires))
    print(t("objects in all: {a} directly, {b} through hires fix").format(a=sum(counts_direct), b=sum(counts_hires)))
    assert all(c > 1 for c in counts_direct) and sum(counts_hires) < sum(counts_direct)  # every direct one repeats; hires fix: fewer objects
    assert sum(c > 1 for c in counts_hires) > len(SEEDS) / 2  # …but most hires results at 0.7 still hold more than one
    display(plots.image_grid(list(direct[:4]) + list(hires[:4]), [t("direct, {n} obj.").format(n=n) for n in counts_direct[:4]] + [t("hires fix, {n} obj.").format(n=n) for n in counts_hires[:4]], ncols=4, cell=1.6))
"""),
    ("md", """
Directly at 128×128 every image holds several separate objects, mostly cats: world 2's toy was
trained on scenes of one and two objects, and on a canvas twice its size it fills the room. Through
hires fix at the WebUI's default strength 0.7 there are fewer objects in all, but most results still
hold more than one, a second cat or a small speck beside the first (all asserted above): the toy, far outside its training size, needs less strength than that. The count sees
separate regions only: objects that touch count as one. The denoising strength decides how much of the
small image survives: below, for each strength, how many of the 8 hires results hold more than one
separate object, and one seed across the strengths.
"""),
    ("code", """
if needs_toy(MODEL, "the hires strength sweep", "try a few denoising strengths by eye"):
    STRENGTHS = [0.3, 0.5, 0.7, 0.9, 1.0]
    repeated, first_seed = [], []
    for s in STRENGTHS:
        _, result = webui.hires_fix(pipe, HIRES_PROMPT, SEEDS, strength=s, steps=STEPS, cfg=CFG)
        repeated.append(sum(webui.count_objects(r) > 1 for r in result))
        first_seed.append(result[1])
        print(t("strength {s}: {n} of 8 with more than one object").format(s=s, n=repeated[-1]))
    assert repeated[0] == 0 < repeated[1] and repeated[-1] >= 6  # one object each at 0.3; repeats from 0.5; nearly all near 1
    display(plots.image_grid(first_seed, [t("strength {s}").format(s=s) for s in STRENGTHS], ncols=5, cell=1.5))
"""),
    ("md", """
At 0.3 every hires result keeps the small image's single object (not its shape, always: the toy's
128-pixel pass bends it, as seed 1's strip shows); from 0.5 on repeats come back, and
at the top of the range nearly every result holds several (asserted above): the higher the strength,
the more of the small image is thrown away, and near 1 hires fix is back to the large-size problem
it is there to avoid. How much strength keeps the composition depends on the model: on the toy it is
well below the WebUI's default.

## 8. Variation seed

**Variation seed** and **Variation strength** mix two starting noises: the WebUI takes the noise of
the seed and the noise of the variation seed and interpolates *on the sphere* (slerp) by the
strength. A straight average of two independent noises would be too weak (its standard deviation
falls to about 0.7 at the midpoint, printed below); slerp keeps it at 1, what the model expects. The slider moves from the
seed's image (strength 0) to the variation seed's (strength 1).
Sources: AUTOMATIC1111 WebUI wiki, *Features* (Variations); WebUI `modules/processing.py` (`slerp`,
`create_random_tensors`).
"""),
    ("code", """
if needs_toy(MODEL, "the variation-seed slider", "set Variation seed and strength in the WebUI"):
    VARIATION = [round(0.1 * i, 1) for i in range(11)]
    mixed = webui.variation_noises(pipe, 0, 1, VARIATION)  # (11, C, h, w)
    a, b = webui.noises(pipe, [0, 1])
    print(t("standard deviation at strength 0.5: slerp {s:.3f}, straight average {l:.3f}").format(s=float(mixed[5].std()), l=float((0.5 * a + 0.5 * b).std())))
    assert float(mixed[5].std()) > 0.95 and float((0.5 * a + 0.5 * b).std()) < 0.75
    # one call per image (a batch of several can differ in the last bit of float rounding)
    frames = [webui.run(pipe, "a red cat on the left", [0], steps=STEPS, cfg=CFG, latents=noise[None])[0] for noise in mixed]
    ends = [webui.run(pipe, "a red cat on the left", [seed], steps=STEPS, cfg=CFG)[0] for seed in (0, 1)]
    import numpy as np
    assert np.array_equal(np.asarray(frames[0]), np.asarray(ends[0])) and np.array_equal(np.asarray(frames[-1]), np.asarray(ends[1]))
    print(t("strength 0 is seed 0's image and strength 1 is seed 1's, pixel for pixel"))
    slider = sdw.FrameScrubber(frames, [t("variation strength {v}").format(v=v) for v in VARIATION], description=t("variation strength"), values=VARIATION)
    slider.slider.value = 5
    display(slider)
"""),
]

REMEMBER = [
    "`(word:w)` scales the word's output vectors by w and rescales the chunk to its old mean; the word's cross-attention share rises with w (measured), but the words after it carry it too (the text encoder is causal), so the picture need not follow. `[word]` is ÷1.1.",
    "The WebUI chunks long prompts (75 tokens per chunk, 77·k slots), so nothing is cut; plain diffusers cuts after 75. `BREAK` starts a new chunk, encoded without the words before it.",
    "Prompt editing `[a:b:k]` and alternation `[a|b]` switch the conditioning during sampling; the first steps fix the layout, so an early switch changes the picture and a late one hardly does.",
    "Clip skip N = the text encoder's output N−1 layers early; use the one the checkpoint was trained with (SD 1.5: 1, NovelAI-derived anime models: 2).",
    "Hires fix = generate small, upscale, image-to-image with a denoising strength: the composition comes from the small image, so subjects repeat less — at a strength low enough for the model (on the toy: one object each at 0.3, repeats again from 0.5); near strength 1 the repeats come back.",
    "A variation seed slerps two starting noises; strength 0 and 1 give the two seeds' own images.",
]


def main():
    nb = new_notebook(NAME, "15 · The WebUI's knobs from the inside", LEARN, CELLS, REMEMBER)
    for i, cell in enumerate(nb.cells):  # stable ids: the zh translation refers to cells by id
        cell.id = f"nb15-{i:02d}"
    path = ROOT / "notebooks" / NAME
    nbformat.write(nb, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
