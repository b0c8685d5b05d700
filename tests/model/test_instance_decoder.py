"""Our instance decoder against micro-sam's (its ``get_unetr`` / ``get_decoder`` over torch_em's
UNETR, see tests/microsam_oracle.py): the same keys and shapes as micro-sam's
``decoder_state``, the same maps from the same weights and embeddings, and checkpoints in
micro-sam's layout load.
"""

from __future__ import annotations

import pytest
import torch
from mobile_sam.modeling import TinyViT

from microsam_oracle import micro_sam_decoder_api
from napari_sam.model import get_config
from napari_sam.model.checkpoints import CheckpointError, StateDictMismatchError
from napari_sam.model.instance_decoder import (
    Channel,
    InstanceDecoder,
    InstanceDecoderConfig,
    build_instance_decoder,
    load_instance_decoder,
    read_decoder_state,
)
from reference_models import official_sam
from tiny_models import tiny_sam_config

ATOL = 1e-4


def micro_sam_encoder(name: str) -> torch.nn.Module:
    """The image encoder micro-sam builds for ``name``: segment_anything's ViT, MobileSAM's
    TinyViT (random weights)."""
    if name == "vit_t":
        return TinyViT(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                       depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                       mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0)  # fmt: skip
    config = tiny_sam_config() if name == "tiny" else get_config(name)
    return official_sam(config).image_encoder


def decoder_state(unetr: torch.nn.Module) -> dict[str, torch.Tensor]:
    """micro-sam's ``decoder_state`` of a UNETR: every key not of the encoder."""
    return {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}


def randomise_batch_norms(module: torch.nn.Module, seed: int) -> None:
    """Random affine weights and running statistics (fresh ones are 1 / 0: an identity)."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = 1 + 0.2 * torch.randn(n, generator=gen)
            bn.bias.data = 0.2 * torch.randn(n, generator=gen)
            bn.running_mean = 0.1 * torch.randn(n, generator=gen)
            bn.running_var = 0.5 + torch.rand(n, generator=gen)


@pytest.mark.parametrize("name", ["vit_b", "vit_t"])
def test_keys_and_shapes_are_micro_sams_decoder_state(name):
    torch.manual_seed(0)
    unetr = micro_sam_decoder_api().get_unetr(micro_sam_encoder(name))
    theirs = {k: tuple(v.shape) for k, v in decoder_state(unetr).items()}
    ours = build_instance_decoder(get_config(name))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    assert ours.config.image_size == unetr.encoder.img_size
    assert ours.config.out_channels == len(Channel) == 3


@pytest.fixture(scope="module")
def micro_sam_tiny_unetr():
    """micro-sam's AIS UNETR over a small ViT (256 input, 16 x 16 grid), random weights."""
    torch.manual_seed(1)
    unetr = micro_sam_decoder_api().get_unetr(micro_sam_encoder("tiny"))
    randomise_batch_norms(unetr, seed=2)
    return unetr.eval()


@pytest.fixture(scope="module")
def embedding(micro_sam_tiny_unetr):
    """A 200 x 150 image (0-255) through micro-sam's preprocessing and encoder: the features,
    the resized size before padding and the image's size."""
    gen = torch.Generator().manual_seed(3)
    image = 255 * torch.rand(1, 3, 200, 150, generator=gen)
    with torch.no_grad():
        (z12, _, _), input_shape = micro_sam_tiny_unetr.encode(image)
    return image, z12, tuple(input_shape), (200, 150)


def test_maps_equal_micro_sams_with_its_weights(micro_sam_tiny_unetr, embedding):
    image, z12, input_shape, original = embedding
    assert input_shape == (256, 192)
    state = decoder_state(micro_sam_tiny_unetr)
    ours = InstanceDecoder(InstanceDecoderConfig(image_size=256))
    ours.load_state_dict(state, strict=True)  # every key of micro-sam's decoder_state
    adapter = micro_sam_decoder_api().DecoderAdapter(micro_sam_tiny_unetr).eval()
    with torch.no_grad():
        theirs = adapter(z12, input_shape, original)
        whole = micro_sam_tiny_unetr(image)  # the UNETR end to end: the adapter's maps
        mine = ours(z12, input_shape, original)
    assert mine.shape == theirs.shape == (1, 3, *original)
    torch.testing.assert_close(whole, theirs, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    assert theirs.std() > 0.01  # maps that vary, not a saturated constant


def test_transposed_upsampling_decoder_loads_into_micro_sam(micro_sam_tiny_unetr, embedding):
    """Older micro-sam decoders upsample by transposed convolutions; micro-sam tells them by
    their keys, and so do we: our random one loads into micro-sam's and gives its maps."""
    _, z12, input_shape, original = embedding
    torch.manual_seed(4)
    ours = InstanceDecoder(InstanceDecoderConfig(image_size=256, conv_transpose=True))
    randomise_batch_norms(ours, seed=5)
    state = ours.state_dict()
    api = micro_sam_decoder_api()
    adapter = api.get_decoder(micro_sam_tiny_unetr.encoder, state).eval()
    assert adapter.deconv_out.__class__.__name__ == "SingleDeconv2DBlock"
    with torch.no_grad():
        torch.testing.assert_close(
            ours(z12, input_shape, original), adapter(z12, input_shape, original),
            atol=ATOL, rtol=0,
        )  # fmt: skip


def test_micro_sam_checkpoint_layout_loads(tmp_path, micro_sam_tiny_unetr):
    config = tiny_sam_config()
    state = decoder_state(micro_sam_tiny_unetr)
    sam_state = {f"sam.{k}": v for k, v in official_sam(config).state_dict().items()}
    path = tmp_path / "micro_sam_layout.pt"
    torch.save({"model_state": sam_state, "decoder_state": state}, path)
    torch.load(path, weights_only=True)  # the file needs no unpickling of code

    decoder = load_instance_decoder(path, config)
    assert not decoder.training and not decoder.config.conv_transpose
    loaded = decoder.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    alone = tmp_path / "decoder_only.pt"  # a separate decoder file: the state dict alone
    torch.save(state, alone)
    assert read_decoder_state(alone).keys() == state.keys()


def test_files_without_a_fitting_decoder_are_refused(tmp_path, micro_sam_tiny_unetr):
    config = tiny_sam_config()
    sam_only = tmp_path / "sam_only.pt"
    torch.save({"model_state": official_sam(config).state_dict()}, sam_only)
    with pytest.raises(CheckpointError, match="no instance decoder"):
        load_instance_decoder(sam_only, config)

    state = decoder_state(micro_sam_tiny_unetr)
    del state["decoder.blocks.0.block.1.weight"]
    broken = tmp_path / "broken.pt"
    torch.save({"decoder_state": state}, broken)
    with pytest.raises(StateDictMismatchError, match=r"decoder\.blocks\.0\.block\.1\.weight"):
        load_instance_decoder(broken, config)
