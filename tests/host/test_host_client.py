"""The host-tier client reports ComfyUI's failures precisely (what later host tests rely on)."""

from __future__ import annotations

import time

import pytest

from comfy_host import ExecutionFailed, ExecutionInterrupted, PromptRejected
from host_graphs import sd15_txt2img, wan21_t2v
from tiny_checkpoints import TINY


def test_invalid_prompt_is_rejected_with_the_node_error(comfy_client):
    prompt = sd15_txt2img("host_client/rejected")
    prompt["ckpt"]["inputs"]["ckpt_name"] = "no_such_checkpoint.safetensors"
    with pytest.raises(PromptRejected) as err:
        comfy_client.queue_prompt(prompt)
    assert "ckpt" in err.value.node_errors
    assert "no_such_checkpoint.safetensors" in str(err.value)


def test_failing_node_raises_with_node_and_exception(comfy_client):
    prompt = wan21_t2v("host_client/failed")
    # A 16-channel Wan latent into the SD1.5 (4-channel) VAE fails inside VAEDecode at run time.
    prompt["ckpt"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY["sd15"]}}
    prompt["decode"]["inputs"]["vae"] = ["ckpt", 2]
    with pytest.raises(ExecutionFailed) as err:
        comfy_client.run(prompt, timeout=300)
    assert err.value.node_id == "decode" and err.value.node_type == "VAEDecode"
    assert err.value.exception_type and err.value.exception_message
    assert err.value.traceback and err.value.exception_message in str(err.value)


def test_interrupt_stops_a_running_prompt(comfy_client):
    prompt_id = comfy_client.queue_prompt(sd15_txt2img("host_client/interrupted", steps=500, seed=12345))
    deadline = time.monotonic() + 120
    while comfy_client.history(prompt_id) is None and time.monotonic() < deadline:
        running = [item[1] for item in comfy_client.queue()["queue_running"]]
        if prompt_id in running:
            comfy_client.interrupt(prompt_id)  # repeated: an interrupt before execution starts is reset
        time.sleep(0.5)
    with pytest.raises(ExecutionInterrupted) as err:
        comfy_client.wait(prompt_id, timeout=60)
    assert err.value.prompt_id == prompt_id
