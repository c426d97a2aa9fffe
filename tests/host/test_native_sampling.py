"""Native ComfyUI graphs run end to end on the tiny official-layout checkpoints (host tier baseline).

These prove the fixtures themselves: the loaders accept the files, KSampler runs, VAEs decode and the
outputs land in ``output/``. AVLab node tests build on the same graphs.
"""

from __future__ import annotations

from PIL import Image

from host_graphs import sd15_txt2img, wan21_t2v


def test_sd15_checkpoint_text_to_image_saves_a_64px_image(comfy_host, comfy_client):
    history = comfy_client.run(sd15_txt2img("host_native/sd15"), timeout=300)
    files = comfy_host.output_files(history, "save")
    assert len(files) == 1 and files[0].is_file(), files
    with Image.open(files[0]) as im:
        assert im.size == (64, 64)


def test_wan21_t2v_video_decodes_to_five_32px_frames(comfy_host, comfy_client):
    history = comfy_client.run(wan21_t2v("host_native/wan21", width=32, height=32, length=5), timeout=300)
    files = comfy_host.output_files(history, "save")
    assert len(files) == 5, files  # 5 frames -> 2 latent frames -> 4*(2-1)+1 = 5 decoded frames
    for path in files:
        with Image.open(path) as im:
            assert im.size == (32, 32)
