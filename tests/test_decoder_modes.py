"""Automatic modes with an instance decoder (AIS, APG): the mode choice, loading the decoder,
micro-sam's prompt derivation, NMS, and the CLI. Random weights; quality: test_bundled_decoder."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from microsam_oracle import micro_sam_point_prompts
from napari_sam.automatic import auto_config, default_mode, segment_everything
from napari_sam.automatic.config import AutoMaskConfig, DecoderModeConfig
from napari_sam.automatic.prompt_generation import GeneratedMask, mask_nms, seed_points
from napari_sam.model.config import get_config
from napari_sam.model.instance_decoder import InstanceDecoder, InstanceDecoderConfig
from napari_sam.model.sam import build_sam
from napari_sam.predictor import Predictor
from napari_sam.transforms import ObjectMask
from test_instance_postprocess import DISCS, disc_targets


def random_decoder(seed: int = 0, features: int = 8) -> InstanceDecoder:
    torch.manual_seed(seed)
    return InstanceDecoder(InstanceDecoderConfig.for_sam(get_config("vit_nano"),
                                                         initial_features=features))  # fmt: skip


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    return build_sam("vit_nano").eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_seed_points_are_micro_sams(seed):
    fg, center, boundary, _ = disc_targets((128, 128), DISCS, seed)
    ours = seed_points(np.stack([fg, center, boundary]))
    theirs = micro_sam_point_prompts()(fg, center, boundary)
    assert len(ours) >= 5
    theirs_rc = theirs["points"][:, 0, ::-1]  # (x, y) -> (row, col)
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs_rc.tolist()))


def test_no_seed_gives_no_point():
    maps = np.stack([np.zeros((16, 16)), np.ones((16, 16)), np.ones((16, 16))])
    assert seed_points(maps).shape == (0, 2)
    assert micro_sam_point_prompts()(*maps) is None


def _square(r0, c0, side, score, shape=(40, 40)):
    crop = np.ones((side, side), bool)
    box = (r0, c0, r0 + side - 1, c0 + side - 1)
    return GeneratedMask(ObjectMask(crop, (r0, c0), shape), box, score, (r0 + 1, c0 + 1))


def test_mask_nms_drops_the_worse_duplicate_only():
    best, twin, other = _square(2, 2, 10, 0.9), _square(2, 3, 10, 0.8), _square(20, 20, 8, 0.5)
    kept = mask_nms([twin, other, best], 0.7)  # twin: IoU 90 / 110 = 0.82 with best
    assert kept == [best, other]
    assert mask_nms([twin, other, best], 0.9) == [best, twin, other]


def test_the_best_mode_is_apg_with_a_decoder_else_amg(nano):
    with_decoder = Predictor(nano, instance_decoder=random_decoder())
    without = Predictor(nano)
    assert default_mode(with_decoder) == "apg" and default_mode(without) == "amg"
    assert isinstance(auto_config(with_decoder), DecoderModeConfig)
    assert auto_config(with_decoder, "ais").mode == "ais"
    assert isinstance(auto_config(without), AutoMaskConfig)
    with pytest.raises(ValueError, match=r"instance decoder.*--decoder"):
        auto_config(without, "apg")


@pytest.mark.parametrize("mode", ["ais", "apg"])
def test_a_blank_image_has_no_objects(nano, mode):
    predictor = Predictor(nano, instance_decoder=random_decoder())
    for image in (np.zeros((96, 80), np.uint16), np.full((96, 80), 7, np.uint16)):
        labels = segment_everything(predictor, image, auto_config(predictor, mode))
        assert labels.shape == (96, 80) and not labels.any()


@pytest.fixture(scope="module")
def micro_sam_file(tmp_path_factory, nano):
    """A checkpoint in micro-sam's layout: SAM weights under ``model_state`` with the
    ``sam.`` prefix, the decoder's under ``decoder_state`` (random weights)."""
    path = tmp_path_factory.mktemp("ms") / "vit_nano_lm.pt"
    state = {"model_state": {f"sam.{k}": v for k, v in nano.state_dict().items()},
             "decoder_state": random_decoder(3).state_dict()}  # fmt: skip
    torch.save(state, path)
    return path


def test_micro_sams_layout_loads_with_its_decoder(micro_sam_file):
    predictor = Predictor.load(str(micro_sam_file), device="cpu")
    assert predictor.instance_decoder is not None
    expected = random_decoder(3).state_dict()
    for key, value in predictor.instance_decoder.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_separate_decoder_file_loads_beside_plain_weights(tmp_path, weights):
    file = tmp_path / "decoder.pt"
    torch.save(random_decoder(4).state_dict(), file)
    assert Predictor.load(str(weights), device="cpu").instance_decoder is None
    predictor = Predictor.load(str(weights), device="cpu", decoder=str(file))
    got = predictor.instance_decoder.state_dict()["out_conv.weight"]
    assert torch.equal(got, random_decoder(4).state_dict()["out_conv.weight"])


def _image(tmp_path):
    from napari_sam.sample_data import synthetic_2d

    path = tmp_path / "nuclei.tif"
    tifffile.imwrite(path, synthetic_2d().image[:128, :160])
    return path


def test_the_cli_runs_apg_on_micro_sams_layout_without_options(tmp_path, micro_sam_file,
                                                                capsys):  # fmt: skip
    from napari_sam.cli import main
    from napari_sam.cli.auto import NOTHING_FOUND

    out = tmp_path / "labels.tif"
    code = main(["auto", str(_image(tmp_path)), "-o", str(out), "--model", str(micro_sam_file)])
    assert code in (0, NOTHING_FOUND)  # random weights may find nothing; the run is the check
    assert "mode apg" in capsys.readouterr().err
    assert tifffile.imread(out).shape == (128, 160)


def test_grid_options_with_a_decoder_mode_are_refused(tmp_path, micro_sam_file, capsys):
    from napari_sam.cli import main

    out = tmp_path / "labels.tif"
    code = main(["auto", str(_image(tmp_path)), "-o", str(out), "--model", str(micro_sam_file),
                 "--points-per-side", "8"])  # fmt: skip
    assert code != 0 and not out.exists()
    assert "--points-per-side" in capsys.readouterr().err


def test_ais_without_a_decoder_is_refused_with_a_hint(tmp_path, weights, capsys):
    from napari_sam.cli import main

    out = tmp_path / "labels.tif"
    code = main(["auto", str(_image(tmp_path)), "-o", str(out), "--model", str(weights),
                 "--mode", "ais"])  # fmt: skip
    assert code != 0 and not out.exists()
    assert "--decoder" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("magnification", 0.5), ("magnified_halo", -1),
                                          ("mode", "amg"), ("link_iou_thresh", 1.5)])  # fmt: skip
def test_decoder_mode_settings_out_of_range_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field if field != "mode" else "decoder mode"):
        DecoderModeConfig(**{field: value})
