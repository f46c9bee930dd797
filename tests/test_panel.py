"""The control panel: knobs -> exactly `sdexplain.generate`'s image; bad input -> a clear message."""

import numpy as np
import pytest

from sdexplain import images, widgets
from sdexplain.generate import generate
from sdexplain.toy import world


@pytest.fixture
def restore_language():
    yield
    from sdexplain import i18n

    i18n.set_language("en")


@pytest.fixture
def small_panel(tiny_pipe):
    view = widgets.ControlPanel(tiny_pipe, prompt="a red cat", steps=3, cfg=3.0, seed=5)
    return view


def test_generate_shows_the_image_sdexplain_generate_makes(tiny_pipe, small_panel):
    small_panel.controls["seed"].value = 7
    small_panel.controls["scheduler"].value = "DDIM"
    before = small_panel.image.value
    small_panel.button.click()
    assert not small_panel.errors, small_panel.errors
    assert small_panel.image.value != before
    expected, _ = generate(tiny_pipe, "a red cat", steps=3, cfg=3.0, seed=7, scheduler="ddim", width=64, height=64)
    assert np.array_equal(np.asarray(small_panel.images[0]), np.asarray(expected[0]))
    shown = images.decode_image(small_panel.image.value)
    assert np.array_equal(shown[:: shown.shape[0] // 64, :: shown.shape[1] // 64], np.asarray(expected[0]))
    assert small_panel.progress.value == small_panel.progress.max
    assert small_panel.scrubber is not None and small_panel.scrubber.slider.max == len(small_panel.run.steps) - 1


def test_image_to_image_uses_the_input_and_strength(tiny_pipe, small_panel):
    picture = images.to_pil(world.render(world.make_scene("dog", "blue", "left", "large"))[0])
    small_panel.set_input_image(picture)
    small_panel.controls["strength"].value = 0.5
    small_panel.controls["steps"].value = 4
    small_panel.generate()
    assert small_panel.controls["scheduler"].value == "PLMS"  # the pipeline's own PNDM without warm-up steps
    expected, run = generate(tiny_pipe, "a red cat", steps=4, cfg=3.0, seed=5, image=picture, strength=0.5, width=64, height=64, scheduler="pndm")
    assert np.array_equal(np.asarray(small_panel.images[0]), np.asarray(expected[0]))
    assert len(small_panel.run.steps) == len(run.steps)


@pytest.mark.parametrize(
    "knob, value, message",
    [("width", 60, "width = 60 is not a multiple of the VAE factor 8"), ("height", 0, "height = 0 is not a multiple")],
)
def test_bad_size_shows_a_message_in_the_panel(small_panel, knob, value, message):
    small_panel.controls[knob].value = value
    small_panel.generate()
    assert message in small_panel.message.value
    assert message in small_panel.output.outputs[0]["data"]["text/plain"]
    assert small_panel.images is None and not small_panel.errors


def test_too_small_strength_and_missing_image_are_explained(tiny_pipe, small_panel):
    small_panel.controls["use_image"].value = True
    small_panel.generate()
    assert "no image was uploaded" in small_panel.message.value
    small_panel.set_input_image(np.zeros((64, 64, 3), dtype=np.uint8))
    small_panel.controls["strength"].value = 0.1
    small_panel.generate()
    assert "rounds down to 0 denoising steps" in small_panel.message.value


def test_a_failure_while_sampling_is_shown_and_the_panel_resets(tiny_pipe, small_panel):
    def fail(module, args):
        raise RuntimeError("out of memory (simulated)")

    handle = tiny_pipe.unet.register_forward_pre_hook(fail)
    try:
        small_panel.button.click()
    finally:
        handle.remove()
    assert "sampling" not in small_panel.message.value
    assert "RuntimeError" in small_panel.message.value and "out of memory (simulated)" in small_panel.message.value
    assert small_panel.progress.bar_style == "danger" and not small_panel.button.disabled
    assert len(small_panel.errors) == 1 and "out of memory (simulated)" in small_panel.errors[0]
    small_panel.button.click()  # the next run works and clears the failure
    assert small_panel.message.value.startswith("done") and small_panel.progress.bar_style == "success"
    assert small_panel.images is not None and small_panel.output.outputs == ()


def test_webui_labels_names_and_defaults(tiny_pipe):
    panel = widgets.ControlPanel(tiny_pipe)
    c = panel.controls
    assert [c[k].description for k in ("prompt", "negative_prompt", "seed", "steps", "cfg", "scheduler", "strength")] == [
        "Prompt", "Negative prompt", "Seed", "Sampling steps", "CFG Scale", "Sampling method", "Denoising strength"]
    assert c["steps"].value == 20 and c["cfg"].value == 7.0 and c["strength"].value == 0.75  # the WebUI's defaults
    assert {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"} <= set(c["scheduler"].options)


def test_chinese_labels_are_the_webuis_beside_the_articles(tiny_pipe, restore_language):
    import sdexplain

    sdexplain.set_language("zh")
    c = widgets.ControlPanel(tiny_pipe).controls
    for key, webui_label in (("steps", "迭代步数"), ("scheduler", "采样方法"), ("cfg", "提示词引导系数"), ("seed", "随机数种子"), ("strength", "重绘幅度"), ("negative_prompt", "反向提示词")):
        assert c[key].description.startswith(webui_label), (key, c[key].description)


def test_a_karras_sampler_runs_and_the_pipelines_own_sampler_is_kept(tiny_pipe, small_panel):
    from diffusers import DPMSolverMultistepScheduler

    own = tiny_pipe.scheduler
    small_panel.controls["scheduler"].value = "DPM++ 2M Karras"
    small_panel.generate()
    assert not small_panel.errors and tiny_pipe.scheduler is own
    tiny_pipe.scheduler = DPMSolverMultistepScheduler.from_config(own.config, use_karras_sigmas=True)
    try:
        expected, _ = generate(tiny_pipe, "a red cat", steps=3, cfg=3.0, seed=5, width=64, height=64)
    finally:
        tiny_pipe.scheduler = own
    assert np.array_equal(np.asarray(small_panel.images[0]), np.asarray(expected[0]))
    plain, _ = generate(tiny_pipe, "a red cat", steps=3, cfg=3.0, seed=5, width=64, height=64, scheduler="dpm++2m")
    assert not np.array_equal(np.asarray(plain[0]), np.asarray(expected[0]))  # Karras spacing is a different run


@pytest.mark.parametrize("kwargs, message", [
    ({"cfg": 0.0}, r"cfg=0.0 is outside the panel's cfg slider, 1.0 to 30.0 \(WebUI's range\)"),
    ({"cfg": 31.0}, r"cfg=31.0 is outside"),
    ({"steps": 151}, r"steps=151 is outside the panel's steps slider, 1 to 150"),
])
def test_the_panel_refuses_a_start_value_its_slider_would_clamp(tiny_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        widgets.ControlPanel(tiny_pipe, **kwargs)
    assert widgets.ControlPanel(tiny_pipe, cfg=1.0).controls["cfg"].value == 1.0  # WebUI's lowest: no guidance
