"""sdexplain.plots: every function returns a Figure with the expected axes and the data drawn."""

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sdexplain import diffusion, images, plots


def _traced(pipe, steps=3, cfg=7.5, preview_every=1):
    from sdexplain.trace import trace

    with trace(pipe, preview_every=preview_every) as run:
        out = pipe("a red cat", num_inference_steps=steps, guidance_scale=cfg, generator=torch.Generator().manual_seed(0))
    return out.images[0], run


def test_noise_schedule_draws_signal_and_noise_scales(tiny_pipe):
    alpha_bar = diffusion.alphas_cumprod(tiny_pipe.scheduler).double().numpy()
    fig = plots.noise_schedule(tiny_pipe.scheduler)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.sqrt(alpha_bar), rtol=1e-6)  # √ᾱ_t, the factor of x0
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.sqrt(1 - alpha_bar), rtol=1e-6)  # σ_t, the factor of ε
    assert ax.lines[0].get_xdata()[-1] == len(alpha_bar) - 1
    # the same from the ᾱ table, as a tensor or an array
    fig2 = plots.noise_schedule(torch.as_tensor(alpha_bar), title=None)
    np.testing.assert_allclose(fig2.axes[0].lines[0].get_ydata(), np.sqrt(alpha_bar))


def test_noise_schedule_marks_t_and_the_sampler_timesteps(tiny_pipe):
    before = tiny_pipe.scheduler.timesteps.clone() if tiny_pipe.scheduler.timesteps is not None else None
    steps = plots.sampler_timesteps(tiny_pipe.scheduler, 10)
    after = tiny_pipe.scheduler.timesteps
    assert (before is None and after is None) or torch.equal(before, after)  # the pipe's scheduler is untouched
    assert steps[0] > steps[-1] and len(steps) >= 10
    fig = plots.noise_schedule(tiny_pipe.scheduler, t=500, timesteps=steps)
    ax = fig.axes[0]
    unique = list(dict.fromkeys(steps))
    dots = [c for c in ax.collections if len(c.get_offsets()) == len(unique)]
    assert dots and np.array_equal(dots[0].get_offsets()[:, 0], unique)
    alpha_bar = diffusion.alphas_cumprod(tiny_pipe.scheduler)
    assert f"√ᾱ_t={float(alpha_bar[500]) ** 0.5:.3f}" in ax.get_title()
    assert any(list(line.get_xdata()) == [500, 500] for line in ax.lines)  # the vertical marker


def test_marked_curve_moves_its_marker_without_matplotlib(tiny_pipe, monkeypatch):
    curve = plots.schedule_curve(tiny_pipe.scheduler)
    background = curve.background
    a, b = curve.frame(100), curve.frame(900)
    assert a.shape == background.shape and a.dtype == np.uint8
    assert not np.array_equal(a, background) and not np.array_equal(a, b)
    column, row = curve._pixel(900, (1 - float(diffusion.alphas_cumprod(tiny_pipe.scheduler)[900])) ** 0.5)
    assert tuple(b[int(round(row)), int(round(column))]) == curve.colour  # a dot on the σ curve at t
    # frames never go back to matplotlib (that is what keeps them at a few ms; the benchmark times it)
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self: pytest.fail("frame() re-rendered the figure"))
    for t in range(0, 1000, 250):
        assert images.decode_image(curve.frame_png(t)).shape == background.shape


def test_image_grid_axes_and_titles():
    pictures = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(5)]
    fig = plots.image_grid(pictures, titles=[f"#{i}" for i in range(5)], ncols=3, suptitle="grid")
    assert len(fig.axes) == 6  # 2 rows × 3, the last one empty
    assert [ax.get_title() for ax in fig.axes[:5]] == [f"#{i}" for i in range(5)]
    assert np.array_equal(fig.axes[2].images[0].get_array(), pictures[2])
    assert not fig.axes[5].images
    with pytest.raises(ValueError, match="titles"):
        plots.image_grid(pictures, titles=["one"])
    with pytest.raises(ValueError):
        plots.image_grid([])


def test_image_grid_rows_follow_the_pictures_aspect():
    square = plots.image_grid([np.zeros((8, 8, 3), dtype=np.uint8)] * 2, cell=2.0)
    wide = plots.image_grid([np.zeros((8, 32, 3), dtype=np.uint8)] * 2, ncols=1, cell=4.0)
    assert tuple(square.get_size_inches()) == (4.0, 2.0)  # square pictures: square cells, as before
    assert tuple(wide.get_size_inches()) == (4.0, 4.0)  # 4:1 pictures: rows half a cell tall, not a full cell


def test_latent_channels_figure():
    latent = torch.randn(1, 4, 8, 8)
    fig = plots.latent_channels(latent, title="z")
    assert len(fig.axes) == 5  # 4 channels + colour bar
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), latent[0, 3].numpy())
    clims = {ax.images[0].get_clim() for ax in fig.axes[:4]}
    assert len(clims) == 1  # one shared scale


def test_loss_curve_draws_each_series():
    train = np.linspace(1.0, 0.1, 50)
    val_steps, val = np.array([0, 25, 49]), np.array([1.0, 0.5, 0.2])
    fig = plots.loss_curve({"train": train, "val": (val_steps, val)})
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), train)
    np.testing.assert_allclose(ax.lines[1].get_xdata(), val_steps)
    assert ax.get_yscale() == "log"
    smoothed = plots.loss_curve(train, smooth=5, log=False).axes[0]
    assert len(smoothed.lines) == 2  # raw + moving average
    np.testing.assert_allclose(smoothed.lines[1].get_ydata()[4], train[:5].mean())
    np.testing.assert_allclose(smoothed.lines[1].get_ydata()[0], train[0])


def test_accuracy_vs_t():
    t = [0, 250, 500, 750, 999]
    fig = plots.accuracy_vs_t(t, {"colour": [1, 0.9, 0.7, 0.4, 0.2], "shape": [1, 0.8, 0.5, 0.3, 0.2]}, chance=0.2)
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1, 0.9, 0.7, 0.4, 0.2])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), t)
    assert any(list(line.get_ydata()) == [0.2, 0.2] for line in ax.lines[2:])  # the chance line


def test_cfg_panels_draw_the_difference_on_its_own_scale():
    g = torch.Generator().manual_seed(0)
    uncond = torch.randn(1, 4, 8, 8, generator=g)
    cond = uncond + 0.1 * torch.randn(1, 4, 8, 8, generator=g)
    fig = plots.cfg_panels(uncond, cond, scale=7.5)
    assert len(fig.axes) == 6  # four panels and two colour bars
    panels = fig.axes[:4]
    expected = [uncond[0], cond[0], cond[0] - uncond[0], uncond[0] + 7.5 * (cond[0] - uncond[0])]
    for ax, tensor in zip(panels, expected):
        np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array(), np.nan), images.channel_mosaic(tensor), rtol=1e-5, atol=1e-6)
    shared = max(float(t.abs().max()) for k, t in enumerate(expected) if k != 2)
    own = float((cond - uncond).abs().max())
    for k in (0, 1, 3):
        assert panels[k].images[0].get_clim() == pytest.approx((-shared, shared), rel=1e-5)
    assert panels[2].images[0].get_clim() == pytest.approx((-own, own), rel=1e-5)
    assert own < shared / 5  # on the shared scale the difference would be a near-white square
    assert f"own scale ±{own:.2f}" in panels[2].get_title()
    one = plots.cfg_panels(uncond[0], cond[0], noise_guided=cond[0], channel=2)
    np.testing.assert_allclose(one.axes[3].images[0].get_array(), cond[0, 2].numpy())
    with pytest.raises(ValueError, match="scale"):
        plots.cfg_panels(uncond, cond)


def test_attention_figures():
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    heat = np.eye(8, dtype=np.float32) * 0.5 + 0.1  # 0.1 … 0.6
    weak = np.full((8, 8), 0.2, np.float32)
    weak[0, 0] = 0.3  # 0.2 … 0.3: a weak map
    grid = plots.attention_maps(picture, {"1:red": heat, "2:cat": weak})
    assert [ax.get_title() for ax in grid.axes[:3]] == ["image", "1:red", "2:cat"]
    assert len(grid.axes) == 4  # the three pictures and one colour bar
    # one scale for both maps, 0.1 … 0.6: the weak map is drawn as weak, not stretched to full range
    np.testing.assert_array_equal(grid.axes[1].images[0].get_array(), images.overlay_heatmap(picture, heat / 0.5 - 0.2, alpha=0.6, normalize=False))
    np.testing.assert_array_equal(grid.axes[2].images[0].get_array(), images.overlay_heatmap(picture, (weak - 0.1) / 0.5, alpha=0.6, normalize=False))
    assert grid.axes[3].get_ylim() == pytest.approx((0.1, 0.6))
    own = plots.attention_maps(picture, {"2:cat": weak}, shared=False)  # each map its own range, said in its title
    np.testing.assert_array_equal(own.axes[1].images[0].get_array(), images.overlay_heatmap(picture, weak, alpha=0.6))
    assert own.axes[1].get_title() == "2:cat\n0.200–0.300" and len(own.axes) == 2
    with pytest.raises(ValueError, match="2 pictures for 1 maps"):
        plots.attention_overlays([picture, picture], [heat])


def test_step_strip_from_a_real_trace(tiny_pipe):
    _, run = _traced(tiny_pipe, steps=3)
    previews = plots.step_strip(run, "previews")
    assert len(previews.axes) == len(run.previews)
    np.testing.assert_array_equal(previews.axes[0].images[0].get_array(), images.to_uint8(run.previews[0].images[0], value_range=(0, 1)))
    x0 = plots.step_strip(run, "x0", pipe=tiny_pipe, max_frames=2)
    assert len(x0.axes) == 2 and x0.axes[-1].get_title().startswith(f"step {len(run.steps)}/")
    assert len(plots.step_strip(run, "latent").axes) == len(run.steps)
    noisy = plots.step_strip(run, "noisy", pipe=tiny_pipe)  # the noisy latent x_t itself, decoded
    first = images.to_uint8(images.vae_decode(tiny_pipe.vae, run.steps[0].latent_in[:1].float()))  # (H, W, 3)
    shown = np.asarray(noisy.axes[0].images[0].get_array()).astype(int)
    assert shown.shape == first.shape and np.abs(shown - first.astype(int)).max() <= 1  # batched decode: float rounding only
    assert len(plots.step_strip(run, "noise").axes) == len(run.steps)
    with pytest.raises(ValueError, match="pipe"):
        plots.step_strip(run, "x0")
    with pytest.raises(ValueError, match="pipe"):
        plots.step_strip(run, "noisy")
    with pytest.raises(ValueError, match="unknown strip"):
        plots.step_strip(run, "attention")
    every = plots.step_pictures(run, "noisy", tiny_pipe)  # all steps, the pictures step_strip shows
    assert len(every) == len(run.steps) and np.abs(every[0].astype(int) - first.astype(int)).max() <= 1
    assert len(plots.step_pictures(run, "latent")) == len(run.steps)
    with pytest.raises(ValueError, match="allowed"):
        plots.step_pictures(run, "previews")


def test_plots_leave_no_pyplot_figures(tiny_pipe):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.noise_schedule(tiny_pipe.scheduler, t=10)
    plots.schedule_curve(tiny_pipe.scheduler).frame(10)
    plots.image_grid([np.zeros((4, 4, 3), np.uint8)])
    assert plt.get_fignums() == before


def test_long_titles_are_wrapped_to_the_cell():
    title = "a large blue circle on the right"
    wrapped = plots.wrap_title(title, cell=1.4)
    assert wrapped.replace("\n", " ") == title and "\n" in wrapped
    assert plots.wrap_title("step 3/21\nt=901", cell=1.4) == "step 3/21\nt=901"  # short lines stay as they are
    fig = plots.image_grid([np.zeros((4, 4, 3), np.uint8)] * 2, [title, "s = 1"], cell=1.4)
    assert fig.axes[0].get_title() == wrapped


def test_neighbouring_titles_of_a_grid_do_not_overlap_when_drawn():
    # notebook 06's slot-swap grid: five long captions side by side overlapped before the wrap width was measured
    titles = ["A: a small green square at the bottom and a small purple cat at the top",
              "B: a small purple square at the bottom and a small green cat at the top",
              "A, with B's two colour-word slots", "A, with B's two noun slots", "A, with B's two place-word slots"]
    fig = plots.image_grid([np.zeros((64, 64, 3), np.uint8)] * 5, titles, ncols=5, cell=2.0)
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes]
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, (left, right)  # each title ends before the next one starts


def test_the_figures_moved_out_of_notebooks_02_03_04():
    import numpy as np
    from types import SimpleNamespace

    from sdexplain.latents import LatentGeometry

    hist = plots.confidence_histogram(np.array([0.2, 0.5, 0.99, 1.0]), classes=5, title="How sure is the judge? 4 unconditional samples")
    bars = hist.axes[0].patches
    assert len(bars) == 16 and sum(b.get_height() for b in bars) == 4  # every sample in one of 16 bins from 1/5 to 1
    with pytest.raises(ValueError, match="classes must be at least 2, got 1"):
        plots.confidence_histogram([0.5], classes=1)

    scatter = plots.error_vs_timestep([10, 500, 990], [0.3, 0.1, 0.05], title="Last 50 training steps")
    assert scatter.axes[0].get_yscale() == "log" and len(scatter.axes[0].collections[0].get_offsets()) == 3
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(2,\)"):
        plots.error_vs_timestep([1, 2, 3], [0.1, 0.2])

    sweep = [SimpleNamespace(geometry=LatentGeometry(height=s, width=s, factor=8, latent_channels=4, image_channels=3), seconds_per_step=0.01 * s / 32,
                             image=np.full((s, s, 3), 100, np.uint8) if s < 64 else None) for s in (32, 64)]
    cost = plots.step_cost(sweep, prompt_title="'a red cat', same seed, each size")
    x, y = cost.axes[0].lines[0].get_data()
    assert list(x) == [32 * 32, 64 * 64] and list(y) == pytest.approx([10.0, 20.0])  # pixels per image, ms per step
    with pytest.raises(ValueError, match="at least one measured size"):
        plots.step_cost([])
