"""Background jobs: each has its own cancel token, checked inside the shared model's image
encoder, so cancelling one job never stops another running on the same model; the scheduler
keeps encoder jobs from overlapping."""

from __future__ import annotations

import threading

import pytest
import torch

from napari_sam.jobs import Busy, Cancelled, CancelToken, Scheduler, cancellable, checkpoint
from napari_sam.model.config import SamConfig, ViTEncoderConfig
from napari_sam.model.sam import build_sam

TINY = SamConfig("jobs_test", ViTEncoderConfig(embed_dim=32, depth=2, num_heads=2,
                                                global_attn_indexes=(1,), window_size=4),
                 image_size=128)  # fmt: skip


def test_cancelling_one_encode_leaves_the_other_running_on_the_same_model():
    torch.manual_seed(0)
    model = build_sam(TINY).eval()
    image = torch.rand(1, 3, TINY.image_size, TINY.image_size)
    with torch.no_grad():
        expected = model.image_encoder(image)
    tokens = {"a": CancelToken(), "b": CancelToken()}
    both_inside = threading.Barrier(2, timeout=30)
    owner = threading.local()

    def first_block(_module, _inputs):  # both encodes are under way when "a" is cancelled
        both_inside.wait()
        if owner.name == "a":
            tokens["a"].cancel()

    handle = model.image_encoder.blocks[0].register_forward_pre_hook(first_block)
    outcome = {}

    def encode(name):
        owner.name = name
        try:
            with cancellable(tokens[name]), torch.no_grad():
                outcome[name] = model.image_encoder(image)
        except Cancelled:
            outcome[name] = "cancelled"

    threads = [threading.Thread(target=encode, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    handle.remove()
    assert outcome["a"] == "cancelled"
    assert torch.equal(outcome["b"], expected)


def test_checkpoint_outside_a_job_and_with_a_live_token_does_nothing():
    checkpoint()  # scripts and the CLI: no job, no cancel
    with cancellable(CancelToken()):
        checkpoint()
    token = CancelToken()
    token.cancel()
    with cancellable(token), pytest.raises(Cancelled):
        checkpoint()
    checkpoint()  # the token is this block's only


def test_encoder_jobs_run_one_at_a_time_and_decodes_beside_them():
    jobs = Scheduler()
    embed = jobs.start("embed")
    with pytest.raises(Busy, match="embedding is running"):
        jobs.start("propagate")
    with pytest.raises(Busy):
        jobs.start("auto")
    decode = jobs.start("decode")
    assert jobs.running() == [embed, decode]
    embed.cancel()
    assert embed.cancelled and not decode.cancelled  # one job's cancel is its own
    jobs.finish(embed)
    propagate = jobs.start("propagate")
    assert jobs.running("propagate") == [propagate]
