"""Forward diffusion on the reader's image, in pixel and latent space, under one t slider."""

from __future__ import annotations

import numpy as np
import torch
import ipywidgets as widgets

from sdexplain import diffusion, images, plots
from sdexplain.widgets.base import DISPLAY_SIZE, View, encoded, image_widget, mosaic, mosaic_edge, play_button, put, titled, upload_image, zoomed
from sdexplain import i18n


class ForwardDiffusionExplorer(View):
    """Forward diffusion x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε on the reader's image, in pixel AND latent space.

    Build with ``ForwardDiffusionExplorer(pipe, image)`` (default image: a toy-world cat). One t slider (0 … T−1) drives:
    ``pixel_image`` (x_t of the image itself), ``latent_image`` (z_t = the VAE latent of the image,
    noised with the same schedule, as 4 grey channels on a fixed scale), ``decoded_image`` (the VAE
    decode of z_t, precomputed at ``decode_steps`` values of t when the image changes — the slider
    shows the nearest one), and ``curve_image`` (ᾱ_t and σ_t with a marker at t).

    The image is VAE-encoded ONCE per upload (``encode_count`` counts encodes); the noise ε is
    fixed by ``seed``, so moving t shows the same noise growing. ``upload`` takes a PNG/JPEG.
    ``decode_steps``: how many decodes to precompute per image (one batched VAE call; 0 turns the
    decode view off). 21 is instant for the toy; a full SD VAE on a CPU needs seconds per decode.
    """

    def __init__(self, pipe, image=None, seed: int = 0, t: int = 250, decode_steps: int = 21, display: int = DISPLAY_SIZE, play_step: int = 10):
        super().__init__()
        self.pipe = pipe
        self.seed = seed
        self.display = display
        self.decode_steps = decode_steps
        self.size = images.model_image_size(pipe)  # (H, W)
        self.alphas_cumprod = diffusion.alphas_cumprod(pipe.scheduler)  # (T,)
        self.num_timesteps = len(self.alphas_cumprod)
        self.encode_count = 0
        self.curve = plots.schedule_curve(self.alphas_cumprod)

        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description=i18n.t("Your image"))
        self.slider = widgets.IntSlider(value=t, min=0, max=self.num_timesteps - 1, description="t", continuous_update=True)
        self.play = play_button(self.slider, interval_ms=100, step=play_step)
        self.pixel_image = image_widget()
        self.latent_image = image_widget()
        self.decoded_image = image_widget()
        self.curve_image = image_widget()
        self.image = self.pixel_image  # the main view, for generic code
        self.readout = widgets.HTML()
        self.decoded_caption = widgets.HTML()
        self.status = widgets.HTML()
        views = [titled(i18n.t("pixel space: x_t"), self.pixel_image), titled(i18n.t("latent space: z_t (4 channels)"), self.latent_image)]
        if decode_steps:
            views.append(widgets.VBox([titled(i18n.t("VAE decode of z_t"), self.decoded_image), self.decoded_caption]))
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.upload, self.status]),
                widgets.HBox([self.play, self.slider]),
                self.readout,
                widgets.HBox(views),
                self.curve_image,
                self.output,
            ]
        )
        self.on_change(self.slider, lambda: self.show(self.slider.value))
        self.upload.observe(self.guard(self._on_upload), names="value")
        self.set_image(image if image is not None else default_image())

    def _on_upload(self, change) -> None:
        picture = upload_image(change["new"])
        if picture is not None:
            self.set_image(picture)

    @torch.no_grad()
    def set_image(self, image) -> None:
        """Use a new clean image: fit it to the model's size, VAE-encode it once, precompute the decodes."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = images.image_from_bytes(image)
        picture = images.fit_to_model(images.to_pil(image), self.size)
        self.x0 = images.pil_to_tensor(picture)  # (1, 3, H, W) in [-1, 1]
        generator = torch.Generator().manual_seed(self.seed)
        self.noise = torch.randn(self.x0.shape, generator=generator)  # (1, 3, H, W)
        self.z0 = images.vae_encode(self.pipe.vae, self.x0)  # (1, 4, h, w)
        self.encode_count += 1
        self.latent_noise = torch.randn(self.z0.shape, generator=generator)  # (1, 4, h, w)
        # One fixed grey scale for every t: the latent's own range, at least ±3 (the noise's).
        self.latent_vmax = max(3.0, float(self.z0.abs().max()))
        if self.decode_steps:
            self.decode_timesteps = np.linspace(0, self.num_timesteps - 1, self.decode_steps).round().astype(int)  # (n,)
            noisy = diffusion.q_sample(
                self.z0.expand(len(self.decode_timesteps), -1, -1, -1),
                torch.as_tensor(self.decode_timesteps),
                self.latent_noise.expand(len(self.decode_timesteps), -1, -1, -1),
                self.alphas_cumprod,
            )  # (n, 4, h, w)
            self.decoded = images.to_uint8(images.vae_decode(self.pipe.vae, noisy))  # (n, H, W, 3)
            self.decoded_bytes = [encoded(zoomed(d, self.display), max(self.size)) for d in self.decoded]  # (format, bytes)
        self.status.value = i18n.t("image {w}×{h}, latent {shape}").format(w=picture.size[0], h=picture.size[1], shape=tuple(self.z0.shape[1:]))
        self.show(self.slider.value)

    # The pictures at t, as arrays (what the slider shows; tests compare against these).
    def pixel_at(self, t: int) -> np.ndarray:
        """x_t in pixel space -> uint8 (H, W, 3) (values outside [-1, 1] clipped for display)."""
        return images.to_uint8(diffusion.q_sample(self.x0, int(t), self.noise, self.alphas_cumprod)[0])

    def latent_at(self, t: int) -> torch.Tensor:
        """z_t -> (4, h, w)."""
        return diffusion.q_sample(self.z0, int(t), self.latent_noise, self.alphas_cumprod)[0]

    def decode_index(self, t: int) -> int:
        """Index of the precomputed decode nearest to t."""
        return int(np.abs(self.decode_timesteps - int(t)).argmin())

    def show(self, t: int) -> None:
        t = int(t)
        alpha_bar = float(self.alphas_cumprod[t])
        sigma = (1 - alpha_bar) ** 0.5
        put(self.pixel_image, encoded(zoomed(self.pixel_at(t), self.display), max(self.size)))
        put(self.latent_image, encoded(mosaic(self.latent_at(t), self.latent_vmax, self.display), mosaic_edge(self.z0)))
        if self.decode_steps:
            k = self.decode_index(t)
            put(self.decoded_image, self.decoded_bytes[k])
            self.decoded_caption.value = "<small>" + i18n.t("precomputed at t = {at} (nearest to {t})").format(at=self.decode_timesteps[k], t=t) + "</small>"
        self.curve_image.value = self.curve.frame_png(t)
        self.readout.value = i18n.t("t = {t} &nbsp; ᾱ_t = {a:.4f} &nbsp; signal √ᾱ_t = {signal:.3f} &nbsp; noise σ_t = √(1−ᾱ_t) = {sigma:.3f} &nbsp; SNR ᾱ/(1−ᾱ) = {snr:.3g}").format(
            t=t, a=alpha_bar, signal=alpha_bar ** 0.5, sigma=sigma, snr=alpha_bar / max(1 - alpha_bar, 1e-12)
        )


def default_image(shape: str = "cat", colour: str = "orange", position: str = "center", size: str = "large") -> np.ndarray:
    """A built-in toy-world scene (uint8 (64, 64, 3)), the default picture to noise."""
    from sdexplain.toy import world

    return world.render(world.make_scene(shape, colour, position, size))[0]
