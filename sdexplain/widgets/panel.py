"""The control panel: every knob of a Stable Diffusion WebUI, each with one line on what it does.

    panel = widgets.ControlPanel(pipe)   # last line of a cell shows it

Knobs: prompt, negative prompt, seed, steps, CFG scale, sampler, width and height (multiples of
the VAE factor), and — with an input image — denoising strength (image-to-image), under the WebUI's
own labels (AUTOMATIC1111 txt2img/img2img: "Sampling method", "Sampling steps", "CFG Scale", …; in
Chinese the WebUI's Chinese labels — 采样方法, 迭代步数, 提示词引导系数, 随机数种子, 重绘幅度,
反向提示词 — with the article's terms beside them). The sampler menu lists the WebUI's sampler names
(`sdexplain.webui.WEBUI_SAMPLERS`: Euler a, DPM++ 2M Karras, DDIM, …). Defaults are the WebUI's
(20 steps, CFG 7) except on the toy, whose CFG default is its own measured one (notebook 09): the
toy follows its prompt at a lower scale than SD, and SD's 7 pushes it past its best. The Generate
button runs `sdexplain.generate` with exactly these settings (a progress bar counts U-Net calls);
the result is shown, and a step slider (`sdexplain.widgets.StepScrubber`) scrubs the captured run.
Bad settings (a size that isn't a multiple of 8, strength too small for the steps, …) are shown as
a clear message in the panel, not a traceback in a log; a failure while sampling is named in the
panel's status line (its traceback below), and the panel is ready for the next run.

Drive it without a browser: set `panel.controls["steps"].value = 10`, call `panel.generate()`,
read `panel.images` / `panel.image.value`.
Not here: the widget primitives (`sdexplain.widgets.base`), the generation itself (`sdexplain.generate`).
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from sdexplain import images
from sdexplain.generate import generate
from sdexplain.webui import WEBUI_CFG, WEBUI_SAMPLERS, WEBUI_STEPS, webui_sampler_name, webui_scheduler
from sdexplain.widgets.base import View, titled, upload_image
from sdexplain.widgets.button import RunProgress, unet_progress
from sdexplain.widgets.scrubbers import StepScrubber
from sdexplain.i18n import t

# the sliders' ranges, WebUI's (modules/ui.py): Sampling steps 1–150, CFG Scale 1–30
STEPS_RANGE = (1, 150)
CFG_RANGE = (1.0, 30.0)

EXPLANATIONS = {
    "prompt": "What you want to see. It is tokenized, embedded, and steers every denoising step through cross-attention.",
    "negative_prompt": "Replaces the empty prompt in the unconditional pass, so guidance pushes AWAY from it.",
    "seed": "Picks the starting noise. Same seed + same settings = the same image, bit for bit.",
    "steps": "How many denoising steps the sampler takes from noise to image: more is slower, and past a point more steps change little (notebook 14 measures where).",
    "cfg": "Classifier-free guidance scale: ε_uncond + s·(ε_cond − ε_uncond). 1 = no guidance, the conditional prediction alone (the slider starts at 1, as WebUI's does); higher follows the prompt more closely (on SD, with less variety between seeds).",
    "scheduler": "The sampler: how each step turns the predicted noise into the next, less noisy latent.",
    "size": "Width × height in pixels; the latent is 8× smaller per side, so both must be multiples of 8. A model is trained at one size (SD 1.x: 512²); far from it, results degrade (on SD, objects repeat).",
    "strength": "Denoising strength (image-to-image only): how far the input is pushed back into noise. 0 = unchanged; 1 = start from almost pure noise, so little of the input is left.",
    "image": "An optional input image: with one, generation becomes image-to-image.",
}

# each explanation's control as the WebUI labels it (the catalogue gives WebUI's Chinese label): notebook 14 lists them
KNOB_LABELS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative prompt",
    "seed": "Seed",
    "steps": "Sampling steps",
    "cfg": "CFG Scale",
    "scheduler": "Sampling method",
    "size": "Width × height",
    "strength": "Denoising strength",
    "image": "input image",
}


class ControlPanel(View):
    """All of a WebUI's main knobs, a Generate button with progress, the result and a step scrubber.

    Parts: ``controls`` (name -> widget), ``button``, ``progress``, ``image``, ``message``,
    ``steps_box`` (holds the step scrubber after a run), ``output`` (errors), ``widget``.
    After a run: ``images``, ``run`` and ``settings_used``.
    """

    def __init__(self, pipe, prompt: str = "a red cat", steps: int = WEBUI_STEPS, cfg: float = WEBUI_CFG, seed: int = 0, input_image=None, sampler: str | None = None):
        super().__init__()
        for name, value, (low, high) in (("steps", steps, STEPS_RANGE), ("cfg", cfg, CFG_RANGE)):
            if not low <= value <= high:  # a slider would clamp it without a word
                raise ValueError(f"{name}={value} is outside the panel's {name} slider, {low} to {high} (WebUI's range)")
        self.pipe = pipe
        self.factor = pipe.vae_scale_factor  # pixels per latent cell along each side
        height, width = images.model_image_size(pipe)
        self.input_image = input_image
        self.images, self.run, self.settings_used, self.scrubber = None, None, None, None
        style = {"description_width": "130px"}
        layout = widgets.Layout(width="420px")
        self.controls = {
            "prompt": widgets.Text(value=prompt, description=t("Prompt"), style=style, layout=layout),
            "negative_prompt": widgets.Text(value="", description=t("Negative prompt"), style=style, layout=layout),
            "seed": widgets.IntText(value=seed, description=t("Seed"), style=style),
            "steps": widgets.IntSlider(value=steps, min=STEPS_RANGE[0], max=STEPS_RANGE[1], description=t("Sampling steps"), style=style),
            "cfg": widgets.FloatSlider(value=cfg, min=CFG_RANGE[0], max=CFG_RANGE[1], step=0.5, description=t("CFG Scale"), style=style),
            "scheduler": widgets.Dropdown(options=list(WEBUI_SAMPLERS), value=sampler or _sampler_name(pipe), description=t("Sampling method"), style=style),
            "width": widgets.IntText(value=width, step=self.factor, description=t("Width"), style=style),
            "height": widgets.IntText(value=height, step=self.factor, description=t("Height"), style=style),
            "use_image": widgets.Checkbox(value=input_image is not None, description=t("use the input image (image-to-image)"), style=style),
            "strength": widgets.FloatSlider(value=0.75, min=0.0, max=1.0, step=0.01, description=t("Denoising strength"), style=style),
            "upload": widgets.FileUpload(accept="image/*", multiple=False, description=t("input image")),
        }
        self.runner = RunProgress("Generate")
        self.button, self.progress, self.message = self.runner.button, self.runner.progress, self.runner.status
        self.image = widgets.Image(format="png")
        self.input_view = widgets.Image(format="png")
        self.steps_box = widgets.VBox([])
        rows = []
        for key, name in (("prompt", "prompt"), ("negative_prompt", "negative_prompt"), ("seed", "seed"), ("steps", "steps"), ("cfg", "cfg"), ("scheduler", "scheduler")):
            rows.append(_with_note(self.controls[key], t(EXPLANATIONS[name])))
        rows.append(_with_note(widgets.HBox([self.controls["width"], self.controls["height"]]), t(EXPLANATIONS["size"])))
        rows.append(_with_note(widgets.HBox([self.controls["upload"], self.controls["use_image"]]), t(EXPLANATIONS["image"])))
        rows.append(_with_note(self.controls["strength"], t(EXPLANATIONS["strength"])))
        self.widget = widgets.VBox(
            [
                *rows,
                widgets.HBox([self.button, self.progress]),
                self.message,
                widgets.HBox([titled(t("input image"), self.input_view), titled(t("result"), self.image)]),
                self.steps_box,
                self.output,
            ]
        )
        self.button.on_click(self.guard(lambda _button: self.generate()))
        self.on_change(self.controls["upload"], self._on_upload)
        if input_image is not None:
            self.set_input_image(input_image)

    # -- input image

    def _on_upload(self) -> None:
        image = upload_image(self.controls["upload"].value)
        if image is not None:
            self.set_input_image(image)

    def set_input_image(self, image) -> None:
        """Use `image` (PIL) as the input for image-to-image, resized to the panel's width × height."""
        self.input_image = images.to_pil(image) if not hasattr(image, "convert") else image.convert("RGB")
        self.controls["use_image"].value = True
        picture = images.to_uint8(self.input_image)
        self.input_view.value = images.encode_png(images.zoom(picture, images.zoom_for(max(picture.shape[:2]))))

    # -- generation

    def settings(self) -> dict:
        """The keyword arguments for `sdexplain.generate` the knobs describe now."""
        c = self.controls
        settings = dict(
            prompt=c["prompt"].value,
            negative_prompt=c["negative_prompt"].value or None,
            seed=int(c["seed"].value),
            steps=int(c["steps"].value),
            cfg=float(c["cfg"].value),
            scheduler=c["scheduler"].value,
            width=int(c["width"].value),
            height=int(c["height"].value),
        )
        if c["use_image"].value:
            if self.input_image is None:
                raise ValueError("'use the input image' is ticked but no image was uploaded")
            settings.update(image=self.input_image, strength=float(c["strength"].value))
        return settings

    def check(self, settings: dict) -> None:
        """Refuse settings the model can't use, with a message that says what to change."""
        for name in ("width", "height"):
            value = settings[name]
            if value < self.factor or value % self.factor:
                suggestion = max(self.factor, round(value / self.factor) * self.factor)
                raise ValueError(f"{name} = {value} is not a multiple of the VAE factor {self.factor} (the latent is {self.factor}× smaller per side); try {suggestion}")
        if "image" in settings and int(settings["steps"] * settings["strength"]) < 1:
            raise ValueError(
                f"steps × strength = {settings['steps']} × {settings['strength']:g} rounds down to 0 denoising steps; raise the strength or the steps"
            )

    def generate(self) -> None:
        """What the button does: check the settings, generate with a progress bar, show the result and its steps."""
        self.message.value = ""
        self.progress.bar_style = ""
        try:
            settings = self.settings()
            self.check(settings)
        except (ValueError, TypeError) as error:  # bad input: a plain message, no traceback
            self.show_message(str(error))
            return
        total = settings["steps"] if "image" not in settings else max(int(settings["steps"] * settings["strength"]), 1)
        options = {k: v for k, v in settings.items() if k not in ("prompt", "scheduler")}
        own = self.pipe.scheduler
        try:
            self.pipe.scheduler = webui_scheduler(self.pipe, settings["scheduler"])  # for this run only
            with self.runner.running(), unet_progress(self.pipe, self.runner.report, total):
                pictures, run = generate(self.pipe, settings["prompt"], **options, preview_every=0)
        except (ValueError, TypeError) as error:  # refused by generate's own checks: a plain message
            self.show_message(str(error))
            return
        finally:
            self.pipe.scheduler = own
        # Any other error went on to the button's guard: named in the status line, traceback in `output`.
        self.images, self.run, self.settings_used = pictures, run, settings
        picture = images.to_uint8(pictures[0])
        self.image.value = images.encode_png(images.zoom(picture, images.zoom_for(max(picture.shape[:2]))))
        self.message.value = t("done: {n} U-Net evaluations, seed {seed}, {sampler}").format(n=len(run.steps), seed=settings["seed"], sampler=settings["scheduler"])
        if self.scrubber is None:
            self.scrubber = StepScrubber(run, self.pipe)
            self.steps_box.children = [widgets.HTML(f"<b>{html.escape(t('Scrub the steps of this run'))}</b>"), self.scrubber.widget]
        else:
            self.scrubber.set_run(run, self.pipe)

    def show_message(self, text: str) -> None:
        """A red one-line message in the panel (and in ``output``), for settings that can't run."""
        self.progress.bar_style = "danger"
        refused = t("Can't generate:")
        self.message.value = f'<span style="color:#b00020"><b>{html.escape(refused)}</b> {html.escape(text)}</span>'
        self.output.outputs = ({"output_type": "display_data", "data": {"text/plain": f"{refused} {text}"}, "metadata": {}},)


def _sampler_name(pipe) -> str:
    """The WebUI name of the pipeline's own sampler; "Euler a" (the WebUI's long-time default) when it has none."""
    return webui_sampler_name(pipe.scheduler) or "Euler a"


def _with_note(control, note: str) -> widgets.Widget:
    return widgets.HBox([control, widgets.HTML(f'<span style="color:#555;font-size:12px">{html.escape(note)}</span>', layout=widgets.Layout(max_width="520px"))])
