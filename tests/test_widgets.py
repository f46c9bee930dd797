"""sdexplain.widgets, driven without a browser: set slider values, decode the image bytes, compare pixels."""

import io
from datetime import datetime

import ipywidgets
import numpy as np
import pytest
import torch
from PIL import Image

from sdexplain import diffusion, images, widgets
from sdexplain.widgets import base
from sdexplain.attention import AttentionMaps
from sdexplain.trace import Step, Trace


def _png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _shown(image_widget) -> np.ndarray:
    return images.decode_image(image_widget.value)


def _unzoom(picture: np.ndarray, size: int) -> np.ndarray:
    """Undo the integer nearest-neighbour display zoom."""
    factor = picture.shape[0] // size
    return picture[::factor, ::factor]


def _synthetic_run(steps=4, batch=2, scale=7.5, seed=0, cfg=True) -> Trace:
    """A Trace with random tensors in the real classes (no sampling): fast and fully known."""
    g = torch.Generator().manual_seed(seed)
    run = Trace(guidance_scale=scale if cfg else None)
    for i, t in enumerate(np.linspace(900, 100, steps).round()):
        a = 1.0 - (i + 1) / (steps + 1)
        latent = torch.randn(batch, 4, 8, 8, generator=g)
        cond = torch.randn(batch, 4, 8, 8, generator=g)
        uncond = cond + 0.2 * torch.randn(batch, 4, 8, 8, generator=g) if cfg else None
        guided = uncond + scale * (cond - uncond) if cfg else cond
        x0 = diffusion.predict_x0(latent, guided, a)
        run.steps.append(Step(i, float(t), a, (1 - a) ** 0.5, latent, uncond, cond, guided, x0, None))
    tokens = ["<|startoftext|>", "a</w>", "red</w>", "cat</w>", "<|endoftext|>", "<|endoftext|>"]
    run.attention = AttentionMaps(
        per_step=[torch.rand(batch, len(tokens), 8, 8, generator=g) for _ in range(steps)],
        padding_per_step=[torch.rand(batch, 8, 8, generator=g) for _ in range(steps)],
        steps=list(range(steps)),
        tokens=[tokens] * batch,
        lengths=[5] * batch,
        resolution=(8, 8),
    )
    return run


def _traced(pipe, cfg=7.5, steps=3, seed=0):
    from sdexplain.trace import trace

    with trace(pipe, preview_every=0) as run:
        out = pipe("a red cat", num_inference_steps=steps, guidance_scale=cfg, generator=torch.Generator().manual_seed(seed))
    return out.images[0], run


class _Counter:
    """Counts forward calls of a module through a read-only hook."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


# --------------------------------------------------------------------------- uploads (ipywidgets 7 and 8)


def _upload_values(data: bytes, name: str = "cat.png"):
    v7 = {name: {"metadata": {"name": name, "type": "image/png", "size": len(data), "lastModified": 0}, "content": data}}
    v8 = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": datetime.now()},)
    return v7, v8


def _simulate_upload(upload, data: bytes, name: str = "cat.png") -> None:
    """Put a file into a FileUpload the way this ipywidgets version's front end does (set_trait: 7.x's value is read-only)."""
    v7, v8 = _upload_values(data, name)
    upload.set_trait("value", v8 if int(ipywidgets.__version__.split(".")[0]) >= 8 else v7)


def test_uploaded_files_reads_both_ipywidgets_shapes():
    data = _png(np.zeros((4, 4, 3), np.uint8))
    v7, v8 = _upload_values(data)
    assert widgets.uploaded_files(v7) == [("cat.png", data)]
    assert widgets.uploaded_files(v8) == [("cat.png", data)]
    assert widgets.uploaded_files({}) == [] and widgets.uploaded_files(()) == [] and widgets.uploaded_files(None) == []
    with pytest.raises(TypeError):
        widgets.uploaded_files(42)


def test_upload_image_converts_and_names_the_file_in_errors():
    rgba = np.zeros((4, 4, 4), np.uint8)
    for value in _upload_values(_png(rgba)):
        picture = widgets.upload_image(value)
        assert picture.mode == "RGB" and picture.getpixel((0, 0)) == (255, 255, 255)
    assert widgets.upload_image(()) is None
    _, bad = _upload_values(b"not an image", name="notes.txt")
    with pytest.raises(ValueError, match="notes.txt"):
        widgets.upload_image(bad)


# --------------------------------------------------------------------------- FrameScrubber and errors


def test_frame_scrubber_shows_the_frame_at_the_slider():
    frames = [np.full((16, 16, 3), 30 * i, np.uint8) for i in range(4)]
    view = widgets.FrameScrubber(frames, labels=[f"f{i}" for i in range(4)])
    assert view.slider.max == 3 and view.play.max == 3
    first = view.image.value
    view.slider.value = 2
    assert view.image.value != first
    assert np.array_equal(_unzoom(_shown(view.image), 16), frames[2])
    assert view.caption.value == "f2"
    view.set_frames(frames[:2])  # shrinking clamps the position
    assert view.slider.value == 1 and np.array_equal(_unzoom(_shown(view.image), 16), frames[1])
    assert view.errors == []


def test_frame_scrubber_reads_out_the_value_each_frame_stands_for():
    frames = [np.full((8, 8, 3), 60 * i, np.uint8) for i in range(3)]
    view = widgets.FrameScrubber(frames, description="strength", values=[0.5, 0.75, 1.0])
    assert view.slider.readout is False and view.value_label.value == "0.5"
    view.slider.value = 2
    assert view.value_label.value == "1"
    view.set_frames(frames[::-1])  # same count: the values stay
    assert view.value_label.value == "1"
    view.set_frames(frames[:2])  # another count: back to frame numbers
    assert view.slider.readout is True and view.value_label.value == ""
    with pytest.raises(ValueError, match="3 frames but 2 values"):
        view.set_frames(frames, values=[1, 2])


def test_callback_errors_land_in_the_output_and_clear_on_success():
    view = widgets.FrameScrubber([np.zeros((8, 8, 3), np.uint8)] * 3)
    good = view.frame_bytes
    view.frame_bytes = []  # break it
    view.slider.value = 1
    assert len(view.errors) == 1 and "IndexError" in view.errors[0]
    (entry,) = view.output.outputs
    assert "IndexError" in entry["data"]["text/plain"] and "color:#b00020" in entry["data"]["text/html"]
    view.frame_bytes = good
    view.slider.value = 2
    assert view.output.outputs == ()  # the stale message is gone
    with pytest.raises(ValueError):
        widgets.FrameScrubber([])


# --------------------------------------------------------------------------- forward diffusion


def test_forward_diffusion_pixels_latents_and_curve(tiny_pipe):
    view = widgets.ForwardDiffusionExplorer(tiny_pipe, seed=3, decode_steps=5)
    alpha_bar = diffusion.alphas_cumprod(tiny_pipe.scheduler)
    clean = images.to_uint8(view.x0)
    assert np.array_equal(clean, widgets.default_image())  # the toy cat, at the model's size already
    before = {name: getattr(view, name).value for name in ("pixel_image", "latent_image", "decoded_image", "curve_image")}
    view.slider.value = 600
    for name, old in before.items():
        assert getattr(view, name).value != old, name
    # pixel space: x_t = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·ε, computed here independently
    a = float(alpha_bar[600])
    noise = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = images.to_uint8((a**0.5 * view.x0 + (1 - a) ** 0.5 * noise)[0])
    assert np.abs(_unzoom(_shown(view.pixel_image), 64).astype(int) - expected).max() <= 1
    # latent space: the same formula on the encoded latent, shown as 4 channels on a fixed scale
    z_t = a**0.5 * view.z0[0] + (1 - a) ** 0.5 * view.latent_noise[0]
    assert np.array_equal(_shown(view.latent_image), base.mosaic(z_t, view.latent_vmax, view.display))
    # the decode is the precomputed one nearest to t
    k = view.decode_index(600)
    assert view.decode_timesteps[k] == 500  # grid 0, 250, 500, 749, 999
    assert np.array_equal(_unzoom(_shown(view.decoded_image), 64), view.decoded[k])
    assert "600" in view.decoded_caption.value and "t = 600" in view.readout.value
    assert np.array_equal(_shown(view.curve_image), view.curve.frame(600))
    view.slider.value = 0
    assert np.abs(_unzoom(_shown(view.pixel_image), 64).astype(int) - clean).mean() < 6  # barely noisy at t=0
    assert view.errors == []


def test_forward_diffusion_encodes_once_per_image_and_never_runs_the_unet_on_a_slider(tiny_pipe):
    view = widgets.ForwardDiffusionExplorer(tiny_pipe, decode_steps=3)
    unet, vae = _Counter(tiny_pipe.unet), _Counter(tiny_pipe.vae.decoder)
    encoder = _Counter(tiny_pipe.vae.encoder)
    for t in range(0, 1000, 37):
        view.slider.value = t
    assert view.encode_count == 1 and unet.calls == 0 and vae.calls == 0 and encoder.calls == 0
    # a new upload (in this ipywidgets version's shape) is encoded once and decoded in one batch
    blue = np.zeros((100, 80, 3), np.uint8)
    blue[..., 2] = 255
    _simulate_upload(view.upload, _png(blue))
    assert view.encode_count == 2 and encoder.calls == 1 and vae.calls == 1
    assert np.array_equal(images.to_uint8(view.x0)[10, 10], [0, 0, 255])
    # both versions' shapes go through the same handler
    for value in _upload_values(_png(np.zeros((64, 64, 3), np.uint8))):
        view._on_upload({"new": value})
    assert view.encode_count == 4 and view.errors == []


def test_forward_diffusion_bad_upload_shows_an_error_and_keeps_the_image(tiny_pipe):
    view = widgets.ForwardDiffusionExplorer(tiny_pipe, decode_steps=0)
    x0 = view.x0.clone()
    _simulate_upload(view.upload, b"garbage", name="holiday.heic")
    assert len(view.errors) == 1 and "holiday.heic" in view.output.outputs[0]["data"]["text/plain"]
    assert torch.equal(view.x0, x0) and view.encode_count == 1


# --------------------------------------------------------------------------- step scrubber


def test_step_scrubber_on_a_real_trace(tiny_pipe):
    _, run = _traced(tiny_pipe, steps=3)
    decoder = _Counter(tiny_pipe.vae.decoder)
    view = widgets.StepScrubber(run, tiny_pipe)
    assert decoder.calls == 1  # all x̂0 decoded in one batch
    assert view.slider.max == len(run.steps) - 1
    unet = _Counter(tiny_pipe.unet)
    for i in [2, 0, 3, 1]:
        old = view.x0_image.value
        view.slider.value = i
        assert view.x0_image.value != old
        step = run.steps[i]
        decoded = images.to_uint8(images.vae_decode(tiny_pipe.vae, step.x0))  # (64, 64, 3), decoded alone
        shown = _unzoom(_shown(view.x0_image), 64)
        assert np.array_equal(shown, view.x0_decoded[i])
        assert np.abs(shown.astype(int) - decoded).max() <= 2  # batched vs single decode: float rounding only
        assert np.array_equal(_shown(view.latent_image), base.mosaic(step.latent_in[0], view.latent_vmax, view.display))
        assert np.array_equal(_shown(view.noise_image), base.mosaic(step.noise_guided[0], view.noise_vmax, view.display))
        assert f"t = {int(step.timestep)}" in view.readout.value and f"{step.alpha_bar:.4f}" in view.readout.value
        assert np.array_equal(_shown(view.curve_image), view.curve.frame(int(step.timestep)))
    assert unet.calls == 0 and decoder.calls == 1 + 4  # only the checks above decoded
    assert view.errors == []


def test_step_scrubber_skips_thinned_steps_and_takes_a_new_run(tiny_pipe):
    run = _synthetic_run(steps=5, batch=2)
    run.steps[1].latent_in = run.steps[1].x0 = None  # as a memory budget leaves them
    view = widgets.StepScrubber(run, tiny_pipe, batch_index=1)
    assert view.slider.max == 3 and [s.index for s in view.steps] == [0, 2, 3, 4]
    view.slider.value = 1
    assert "step 3 / 5" in view.readout.value
    assert np.array_equal(_shown(view.latent_image), base.mosaic(run.steps[2].latent_in[1], view.latent_vmax, view.display))
    view.set_run(_synthetic_run(steps=2, batch=1, seed=1))
    assert view.slider.max == 1 and view.slider.value == 1 and view.errors == []
    with pytest.raises(ValueError, match="no step tensors"):
        view.set_run(Trace())


# --------------------------------------------------------------------------- guidance


def _pictures(n):
    return [np.full((64, 64, 3), 40 * (i + 1), np.uint8) for i in range(n)]


def test_cfg_explorer_indexes_the_sweep_and_shows_the_four_panels():
    runs = [_synthetic_run(steps=3, batch=1, scale=s, seed=i) for i, s in enumerate((3.0, 7.5))]
    p = _pictures(2)
    view = widgets.CfgExplorer([(7.5, p[1], runs[1]), (3.0, p[0], runs[0])])  # sorted by scale
    assert [label for label, _ in view.scale_slider.options] == ["3", "7.5"]
    assert np.array_equal(_unzoom(_shown(view.image), 64), p[0])
    before = [w.value for w in view.panel_images]
    view.scale_slider.value = 1
    assert np.array_equal(_unzoom(_shown(view.image), 64), p[1])
    view.step_slider.value = 2
    assert all(w.value != b for w, b in zip(view.panel_images, before))
    step = runs[1].steps[2]
    uncond, cond, guided = step.noise_uncond[0], step.noise_cond[0], step.noise_guided[0]
    vmax = max(float(x.abs().max()) for x in (uncond, cond, guided))
    dmax = float((cond - uncond).abs().max())  # the difference: its own scale, else a blank square
    for widget, tensor, limit in zip(view.panel_images, (uncond, cond, cond - uncond, guided), (vmax, vmax, dmax, vmax)):
        assert np.array_equal(_shown(widget), base.mosaic(tensor, limit, view.display, cmap="RdBu_r"))
    assert f"difference ±{dmax:.2f}" in view.readout.value
    assert "s = 7.5" in view.readout.value and f"{float((cond - uncond).norm()):.3f}" in view.readout.value
    assert view.errors == []


def test_cfg_explorer_accepts_dicts_batched_sweeps_and_objects():
    run = _synthetic_run(steps=2, batch=2)
    p = _pictures(2)
    view = widgets.CfgExplorer({1.5: (p[0], run, 0), 9.0: (p[1], run, 1)})
    view.scale_slider.value = 1
    view.step_slider.value = 1
    step = run.steps[1]
    assert np.array_equal(
        _shown(view.panel_images[1]), view.panels(1, 1)[1]
    ) and torch.equal(view.noises(1, 1)[1], step.noise_cond[1])

    class Result:  # what a guidance module might return
        def __init__(self, scale, image, run):
            self.scale, self.image, self.run = scale, image, run

    view.set_results([Result(2.0, p[0], run), Result(4.0, p[1], None)])
    assert [r.scale for r in view.results] == [2.0, 4.0]
    view.scale_slider.value = 1
    assert "no trace" in view.readout.value
    with pytest.raises(TypeError):
        widgets.guidance_results([object()])
    with pytest.raises(ValueError, match="empty"):
        widgets.guidance_results([])


def test_cfg_explorer_explains_a_run_without_guidance(tiny_pipe):
    image_off, run_off = _traced(tiny_pipe, cfg=1.0, steps=2)
    image_on, run_on = _traced(tiny_pipe, cfg=5.0, steps=2)
    view = widgets.CfgExplorer({1.0: (image_off, run_off), 5.0: (image_on, run_on)})
    assert "without guidance" in view.readout.value
    view.scale_slider.value = 1
    assert "s = 5" in view.readout.value and view.errors == []
    assert np.array_equal(_unzoom(_shown(view.image), 64), np.asarray(image_on))


# --------------------------------------------------------------------------- attention


def test_attention_explorer_overlays_the_chosen_word_and_step():
    run = _synthetic_run(steps=3, batch=2)
    picture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    view = widgets.AttentionExplorer(run, picture, batch_index=1, alpha=0.5)
    assert list(view.token.options) == ["1:a", "2:red", "3:cat", "<start>", "<end>"]
    assert [v for _, v in view.slider.options] == [widgets.ALL_STEPS, 0, 1, 2]
    zoomed = images.zoom(picture, 4)
    first = view.image.value
    view.token.value = "3:cat"
    assert view.image.value != first
    mean_map = run.attention.word_maps(batch_index=1)["3:cat"]  # all steps
    assert np.array_equal(_shown(view.image), images.overlay_heatmap(zoomed, mean_map, alpha=0.5))
    view.slider.value = 2
    step_map = run.attention.per_step[2][1, 3]
    assert np.array_equal(_shown(view.image), images.overlay_heatmap(zoomed, step_map, alpha=0.5))
    assert "3:cat" in view.readout.value and "step 3" in view.readout.value
    view.token.value = "<start>"
    assert np.allclose(view.heat("<start>", 2), run.attention.per_step[2][1, 0].numpy())
    assert view.errors == []


def test_large_pictures_redrawn_in_callbacks_go_out_as_jpeg():
    assert base.format_for(128) == "png" and base.format_for(129) == "jpeg"
    run = _synthetic_run(steps=2, batch=1)
    smooth = np.tile(np.linspace(0, 255, 512, dtype=np.uint8)[None, :, None], (512, 1, 3))
    view = widgets.AttentionExplorer(run, smooth, alpha=0.3)
    view.token.value = "2:red"
    assert view.image.format == "jpeg" and view.image.value[:2] == b"\xff\xd8"
    expected = images.overlay_heatmap(smooth, run.attention.word_maps(0)["2:red"], alpha=0.3)
    assert np.abs(_shown(view.image).astype(int) - expected).mean() < 4  # lossy, but the same picture


def test_cfg_panels_of_large_latents_are_jpeg_and_cached():
    g = torch.Generator().manual_seed(0)
    run = Trace()
    for i in range(2):
        uncond, cond = torch.randn(1, 4, 64, 64, generator=g), torch.randn(1, 4, 64, 64, generator=g)  # SD's 512 px latents
        run.steps.append(Step(i, 900.0 - 400 * i, 0.5, 0.7, uncond, uncond, cond, uncond + 7.5 * (cond - uncond), uncond, None))
    view = widgets.CfgExplorer([(7.5, np.zeros((512, 512, 3), np.uint8), run)])
    assert all(p.format == "jpeg" for p in view.panel_images) and view.image.format == "jpeg"
    view.step_slider.value = 1
    cached = view._panel_cache[(0, 1)]
    view.step_slider.value = 0
    view.step_slider.value = 1
    assert view._panel_cache[(0, 1)] is cached and view.panel_images[3].value == cached[3][1]
    expected = view.panels(0, 1)[3]
    assert np.abs(_shown(view.panel_images[3]).astype(int) - expected).mean() < 8  # lossy, but the same picture


def test_attention_explorer_on_a_real_trace_keeps_the_choice_on_a_new_run(tiny_pipe):
    image, run = _traced(tiny_pipe, steps=2)
    view = widgets.AttentionExplorer(run, image)
    view.token.value = "2:red"
    view.slider.value = 1
    image2, run2 = _traced(tiny_pipe, steps=2, seed=1)
    view.set_run(run2, image2)
    assert view.token.value == "2:red" and view.slider.value == 1
    heat = run2.attention.word_maps(0, step=1)["2:red"]
    assert np.array_equal(_shown(view.image), images.overlay_heatmap(images.zoom(np.asarray(image2), 4), heat, alpha=view.alpha))
    assert view.errors == []


# --------------------------------------------------------------------------- generate button


def test_generate_button_runs_the_work_reports_progress_and_refreshes():
    seen, done = [], []

    def work(prompt, progress):
        for i in range(5):
            progress(i + 1, 5)
            seen.append(i)
        return prompt.upper()

    button = widgets.GenerateButton(work, on_done=done.append, prompt="a red cat")
    button.click()
    assert button.result == "A RED CAT" and done == ["A RED CAT"] and seen == list(range(5))
    assert (button.progress.value, button.progress.max) == (5, 5) and not button.button.disabled
    assert button.errors == []


def test_generate_button_shows_errors_and_stays_usable():
    button = widgets.GenerateButton(lambda prompt, progress: 1 / 0)
    button.click()
    assert "ZeroDivisionError" in button.output.outputs[0]["data"]["text/plain"]
    assert not button.button.disabled and button.progress.bar_style == "danger"


def test_sampler_and_progress_drive_a_real_pipeline(tiny_pipe):
    reports = []
    scrubber_holder = {}
    button = widgets.GenerateButton(
        widgets.sampler(tiny_pipe, steps=3, cfg=5.0),
        on_done=lambda result: scrubber_holder.setdefault("view", widgets.StepScrubber(result[1], tiny_pipe)),
        prompt="a blue dog",
    )
    original = button.report
    button.report = lambda done, total: (reports.append((done, total)), original(done, total))
    button.click()
    assert button.errors == [] and len(reports) >= 3 and reports[-1] == (3, 3)
    images_, run = button.result
    assert len(images_) == 1 and len(run.steps) >= 3
    assert scrubber_holder["view"].slider.max == len(run.steps) - 1
