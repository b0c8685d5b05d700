"""The instance decoder's trainer: it learns, resumes exactly, and the CLI writes a decoder
that loads beside the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.model.instance_decoder import InstanceDecoder, InstanceDecoderConfig
from napari_sam.training.augment import AugmentConfig
from napari_sam.training.data import ImagePair
from napari_sam.training.decoder_trainer import DecoderTrainConfig, DecoderTrainer
from napari_sam.training.synthetic import synthetic_nuclei


class OnePair:
    """A sampler that always gives the same image."""

    def __init__(self) -> None:
        sample = synthetic_nuclei((128, 128), seed=3)
        self.pair = ImagePair(sample.image.astype(np.float32), sample.labels)

    def __call__(self, rng, step):
        return self.pair


def _trainer(tiny_sam, steps=40, seed=0, image_skip=False):
    torch.manual_seed(seed)
    decoder = InstanceDecoder(InstanceDecoderConfig.for_sam(
        tiny_sam.config, initial_features=4, image_skip=image_skip))  # fmt: skip
    config = DecoderTrainConfig(steps=steps, batch=2, crop=8, lr=3e-3, warmup_steps=2,
                                augment=AugmentConfig.none())  # fmt: skip
    return DecoderTrainer(tiny_sam, decoder, config, OnePair())


@pytest.mark.parametrize("image_skip", [False, True])
def test_the_loss_falls_and_the_sam_model_does_not_change(tiny_sam, image_skip):
    before = {k: v.clone() for k, v in tiny_sam.state_dict().items()}
    trainer = _trainer(tiny_sam, image_skip=image_skip)
    with torch.no_grad():
        start = trainer.batch_loss(0).item()
    list(trainer.run())
    with torch.no_grad():
        trainer.decoder.train()
        end = trainer.batch_loss(0).item()
    assert end < 0.8 * start, (start, end)
    for key, value in tiny_sam.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_resumed_run_continues_where_it_stopped(tiny_sam, tmp_path):
    straight = _trainer(tiny_sam, steps=6)
    list(straight.run())
    first = _trainer(tiny_sam, steps=6)
    list(first.run(until=3))
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = _trainer(tiny_sam, steps=6, seed=1)  # other initial weights, then loaded
    resumed.load_checkpoint(tmp_path / "c.pt")
    assert resumed.step == 3
    list(resumed.run())
    for key, value in straight.decoder.state_dict().items():
        torch.testing.assert_close(resumed.decoder.state_dict()[key], value)


def test_a_checkpoint_of_another_model_is_refused(tiny_sam, tmp_path):
    trainer = _trainer(tiny_sam, steps=2)
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["architecture"] = "vit_b"
    torch.save(state, path)
    with pytest.raises(ValueError, match="not a decoder run on"):
        _trainer(tiny_sam).load_checkpoint(path)


def test_cli_train_decoder_writes_a_decoder_that_loads(tmp_path, weights):
    from napari_sam.cli import main
    from napari_sam.predictor import Predictor

    out = tmp_path / "decoder.pt"
    code = main(["train", "--decoder", "--model", str(weights), "--synthetic", "2",
                 "--steps", "2", "--warmup", "1", "--batch", "1", "--crop", "4",
                 "--decoder-features", "4", "--out", str(out), "--half", "--no-augment",
                 "--checkpoint-every", "1", "--image-skip"])  # fmt: skip
    assert code == 0
    predictor = Predictor.load(str(weights), device="cpu", decoder=str(out))
    config = predictor.instance_decoder.config
    assert config.initial_features == 4 and config.image_skip
    image = np.zeros((40, 50), np.uint8)
    image[10:20, 10:30] = 200
    embedding = predictor.embed(image)
    with pytest.raises(ValueError, match="reads the image"):
        predictor.instance_maps(embedding)
    from napari_sam.image import to_model_image

    maps = predictor.instance_maps(embedding, to_model_image(image))
    assert maps.shape == (3, 40, 50) and ((maps >= 0) & (maps <= 1)).all()
    assert (tmp_path / "decoder" / "log.tsv").read_text().count("\n") == 3  # header + 2 steps


def test_cli_train_decoder_continues_from_an_init_decoder(tmp_path, weights):
    """``--init-decoder`` starts from that decoder: its layout, and its weights (a learning
    rate too small to move them leaves them as they were), not a fresh random decoder."""
    from napari_sam.cli import main
    from napari_sam.model.instance_decoder import read_decoder_state

    def train(out, *extra):
        code = main(["train", "--decoder", "--model", str(weights), "--synthetic", "2",
                     "--steps", "1", "--warmup", "1", "--batch", "1", "--crop", "4",
                     "--out", str(out), "--no-augment", *extra])  # fmt: skip
        assert code == 0
        return read_decoder_state(out)

    first = train(tmp_path / "a.pt", "--decoder-features", "4", "--image-skip")
    second = train(tmp_path / "b.pt", "--init-decoder", str(tmp_path / "a.pt"), "--lr", "1e-12")
    assert second.keys() == first.keys()
    for key, value in first.items():
        if "running_" in key or "num_batches" in key:
            continue  # batch-norm statistics follow the step's batch whatever the learning rate
        torch.testing.assert_close(second[key], value, atol=1e-6, rtol=0, msg=key)
    fresh = train(tmp_path / "c.pt", "--decoder-features", "4", "--image-skip", "--seed", "1")
    assert any(not torch.allclose(fresh[k], v, atol=1e-3) for k, v in first.items())
