"""Trained weights load strictly in the official segment-anything classes and compute the
same masks there (vit_b at a reduced input size to keep it fast; the bundled vit_nano)."""


import torch
from training_helpers import FixedSampler

from napari_sam.model.config import VIT_B, VIT_NANO, SamConfig
from napari_sam.model.sam import build_sam
from napari_sam.training.rounds import RoundsConfig
from napari_sam.training.trainer import TrainConfig, Trainer, export_weights
from reference_models import official_sam


def _same_outputs(ours, official, size):
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    points = (torch.rand(2, 2, 2) * size, torch.ones(2, 2, dtype=torch.long))
    with torch.no_grad():
        outs = []
        for m in (ours, official):
            emb = m.image_encoder(x)
            sparse, dense = m.prompt_encoder(points=points, boxes=None, masks=None)
            outs.append(m.mask_decoder(emb, m.prompt_encoder.get_dense_pe(), sparse, dense, True))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-3)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-4)


def test_trained_vit_b_loads_in_the_official_package(tmp_path, easy_pair):
    config = SamConfig("vit_b_128", VIT_B.encoder, image_size=128)
    model = build_sam(config)
    train = TrainConfig(steps=1, objects_per_image=2, freeze="image_encoder",
                        rounds=RoundsConfig(corrective=1, refine=0))
    list(Trainer(model, train, FixedSampler(easy_pair)).run())
    path = export_weights(model, tmp_path / "vit_b_128.pt")
    official = official_sam(config)
    official.load_state_dict(torch.load(path, weights_only=True), strict=True)
    _same_outputs(model.eval(), official, 128)


def test_bundled_architecture_loads_in_the_official_package(tmp_path):
    model = build_sam(VIT_NANO)
    path = export_weights(model, tmp_path / "nano.pt", torch.float16)
    official = official_sam(VIT_NANO)
    official.load_state_dict(torch.load(path, weights_only=True), strict=True)
    ours = build_sam(VIT_NANO)
    ours.load_state_dict(torch.load(path, weights_only=True), strict=True)
    _same_outputs(ours, official, VIT_NANO.image_size)
