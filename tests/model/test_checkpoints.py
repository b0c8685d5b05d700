"""Reading checkpoint files safely, telling their architecture, and loading them strictly.

Files are made by the reference packages (segment_anything, mobile_sam), saved with
torch.save, then loaded into our model: every tensor must arrive unchanged.
"""

from __future__ import annotations

import builtins
from dataclasses import replace
from pathlib import Path

import pytest
import segment_anything
import torch
from mobile_sam import sam_model_registry as mobile_registry

from napari_sam.model import download, safe_pickle
from napari_sam.model.checkpoints import (
    ArchitectureError,
    CheckpointError,
    LoadedModel,
    StateDictMismatchError,
    detect_architecture,
    load_model,
    load_weights_into,
    normalise_state_dict,
    read_state_dict,
)
from napari_sam.model.config import get_config
from napari_sam.model.download import (
    WEIGHTS,
    WeightsError,
    WeightsInfo,
    file_sha256,
    file_xxh128,
)
from napari_sam.model.sam import build_sam

HEAD_KEYS = {
    "image_encoder.norm_head.weight", "image_encoder.norm_head.bias",
    "image_encoder.head.weight", "image_encoder.head.bias",
}


@pytest.fixture(scope="module")
def mobile_state() -> dict[str, torch.Tensor]:
    """MobileSAM's state dict as published (classifier head included), random weights."""
    torch.manual_seed(0)
    return mobile_registry["vit_t"]().state_dict()


@pytest.fixture(scope="module")
def mobile_file(mobile_state: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "mobile_sam.pt"
    torch.save(mobile_state, path)
    return path


def _assert_same_tensors(ours: dict, reference: dict) -> None:
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


def test_mobile_sam_file_loads_strictly_and_encodes_identically(
    mobile_file: Path, mobile_state: dict
) -> None:
    state = read_state_dict(mobile_file)
    assert HEAD_KEYS <= set(mobile_state) and not HEAD_KEYS & set(state)
    loaded = load_model(mobile_file)
    assert isinstance(loaded, LoadedModel)
    assert (loaded.name, loaded.architecture, loaded.path) == ("mobile_sam", "vit_t", mobile_file)
    assert loaded.weights_hash == file_xxh128(mobile_file) and len(loaded.weights_hash) == 32
    assert loaded.config.name == "vit_t" and not loaded.model.training
    reference = {k: v for k, v in mobile_state.items() if k not in HEAD_KEYS}
    _assert_same_tensors(loaded.model.state_dict(), reference)

    # A forward through prompt encoder + mask decoder (the encoder at 1024 costs ~15 s here;
    # its weights are compared above, its arithmetic is the architecture tests' concern).
    oracle = mobile_registry["vit_t"]()
    oracle.load_state_dict(mobile_state)
    oracle.eval()
    gen = torch.Generator().manual_seed(1)
    embedding = torch.randn(1, 256, 64, 64, generator=gen)
    points = (torch.tensor([[[300.0, 500.0], [700.0, 200.0]]]), torch.tensor([[1, 0]]))
    outputs = []
    for model in (oracle, loaded.model):
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
            outputs.append(model.mask_decoder(
                embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, True
            ))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_official_vit_b_file_loads_tensor_for_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = segment_anything.sam_model_registry["vit_b"]().state_dict()
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(reference, path)
    loaded = load_model(path)
    assert loaded.architecture == "vit_b" and not loaded.model.training
    _assert_same_tensors(loaded.model.state_dict(), reference)
    torch.testing.assert_close(loaded.model.pixel_mean.flatten(),
                               torch.tensor([123.675, 116.28, 103.53]))


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_detects_official_vit_architectures(name: str) -> None:
    with torch.device("meta"):  # shapes only: vit_h would be 2.5 GB of random numbers
        state = segment_anything.sam_model_registry[name]().state_dict()
    assert detect_architecture(state) == name


def test_detects_our_own_registered_small_architecture() -> None:
    state = build_sam("vit_nano").state_dict()
    assert detect_architecture(state) == "vit_nano"


def test_detects_mobile_sam_and_num_batches_tracked_is_optional(mobile_state: dict) -> None:
    state = normalise_state_dict(mobile_state)
    assert detect_architecture(state) == "vit_t"
    without = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(without) < len(state)
    assert detect_architecture(without) == "vit_t"
    model = build_sam("vit_t")
    load_weights_into(model, without)
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"],
                       state["mask_decoder.iou_token.weight"])


def test_state_dict_matching_no_architecture_names_closest_and_differences(
    mobile_state: dict, tmp_path: Path
) -> None:
    state = normalise_state_dict(mobile_state)
    del state["mask_decoder.iou_token.weight"]
    state["prompt_encoder.not_a_weight"] = torch.zeros(1)
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 256)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ArchitectureError) as err:
        load_model(tmp_path / "odd.pt")
    message = str(err.value)
    assert "closest is vit_t" in message
    assert "1 missing keys: mask_decoder.iou_token.weight" in message
    assert "1 unexpected keys: prompt_encoder.not_a_weight" in message
    assert "mask_decoder.mask_tokens.weight: file (5, 256) vs model (4, 256)" in message


def test_wrong_architecture_is_refused_with_a_trimmed_key_list(mobile_state: dict) -> None:
    with pytest.raises(StateDictMismatchError) as err:
        load_weights_into(build_sam("vit_b"), normalise_state_dict(mobile_state))
    message = str(err.value)
    assert "missing keys: image_encoder.pos_embed" in message
    assert "unexpected keys: image_encoder.patch_embed.seq.0.c.weight" in message
    assert "more" in message and len(message) < 3000


def test_named_weights_are_fetched_verified_and_loaded(
    mobile_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = WeightsInfo("test_t", "vit_t", mobile_file.as_uri(), file_sha256(mobile_file),
                       "mobile_sam.pt")
    monkeypatch.setitem(WEIGHTS, "test_t", info)
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path))
    seen: list[tuple[int, int]] = []
    loaded = load_model("test_t", progress=lambda d, t: seen.append((d, t)))
    assert loaded.path == tmp_path / "weights" / "test_t" / "mobile_sam.pt"
    assert (loaded.name, loaded.architecture) == ("test_t", "vit_t")
    assert seen[-1] == (mobile_file.stat().st_size,) * 2
    # Embedding caches see one identity for one file, whether it is named or given by path.
    assert loaded.weights_hash == file_xxh128(mobile_file) == load_model(loaded.path).weights_hash

    # The same file registered under the wrong architecture: a clear refusal.
    monkeypatch.setitem(WEIGHTS, "test_t", replace(info, architecture="vit_b"))
    with pytest.raises(StateDictMismatchError, match="as vit_b: the weights do not fit Sam"):
        load_model("test_t")


def test_unknown_name_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a weights file nor a known"):
        load_model("vit_zz")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")


def test_truncated_random_and_empty_files_are_clear_errors(
    mobile_file: Path, tmp_path: Path
) -> None:
    data = mobile_file.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "random.pt": torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes(),
        "empty.pt": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="cannot read weights file") as err:
            read_state_dict(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
        assert isinstance(err.value, WeightsError)


class _BadTensor:
    """Unpickles to a tensor rebuilder given garbage: the restricted unpickler fails on it."""

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, ("not a storage",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 5:UserWarning")
@pytest.mark.parametrize(
    ("protocol", "payload", "reason"),
    [
        # a pickle protocol torch's loader does not read: "Re-running `torch.load` with
        # `weights_only` set to `False` will likely succeed"
        (5, False, "UnpicklingError: Unsupported operand"),
        # a global it does not allow: "This file can still be loaded ... do those steps only
        # if you trust the source ... add_safe_globals([exec])"
        (2, True, "UnpicklingError: Unsupported global: GLOBAL exec was not an allowed global"),
    ],
    ids=["unknown opcode", "exec global"],
)
def test_unreadable_file_error_never_advises_running_the_pickle(
    tmp_path: Path, protocol: int, payload: bool, reason: str
) -> None:
    """A file both loaders refuse: our error keeps torch's reason, drops its advice."""
    first = _Evil(tmp_path / "pwned.txt") if payload else torch.zeros(1)
    path = tmp_path / "unreadable.pt"
    torch.save({"first": first, "bad": _BadTensor()}, path, pickle_protocol=protocol)
    with pytest.raises(Exception) as torch_error:
        torch.load(path, weights_only=True)
    assert "weights_only` set to `False`" in str(torch_error.value)  # torch's own advice
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert f"cannot read weights file {path}" in message
    for advice in ("weights_only", "can still be loaded", "trust", "safe_globals",
                   "arbitrary code", "\x1b["):
        assert advice not in message, advice
    assert reason in message and "_rebuild_tensor_v2()" in message  # both loaders' reasons
    # Nor does the traceback's chain carry torch's message along.
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert not (tmp_path / "pwned.txt").exists()


class _Evil:
    """Unpickling this would run ``exec`` and write a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_micro_sam_file_with_malicious_pickle_loads_tensors_only(
    mobile_state: dict, tmp_path: Path
) -> None:
    target = tmp_path / "pwned.txt"
    state = normalise_state_dict(mobile_state)
    checkpoint = {
        "model_state": {f"sam.{k}": v for k, v in state.items()},
        "decoder_state": {"unet.weight": torch.ones(2)},
        "config": _Evil(target),
        "optimizer_class": torch.optim.AdamW,
        "iteration": 100,
    }
    path = tmp_path / "vit_t_lm.pt"
    torch.save(checkpoint, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # torch's own safe loader refuses this file

    loaded = read_state_dict(path)
    assert not target.exists()
    _assert_same_tensors(loaded, state)
    loaded_model = load_model(path)
    assert loaded_model.architecture == "vit_t" and loaded_model.decoder is None  # not a UNETR
    assert not target.exists()


def test_file_that_is_only_a_malicious_pickle_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    torch.save(_Evil(target), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(tmp_path / "evil.pt")
    torch.save({"model_state": {"sam.x": _Evil(target)}}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match=r"not tensors: sam\.x"):
        read_state_dict(tmp_path / "evil2.pt")
    assert not target.exists()


def test_safe_pickle_turns_unknown_globals_into_inert_placeholders(tmp_path: Path) -> None:
    import pickle

    target = tmp_path / "pwned.txt"
    obj = safe_pickle.loads(pickle.dumps({"a": _Evil(target), "b": [1, 2.5, "x"]}))
    assert isinstance(obj["a"], safe_pickle.Placeholder)
    assert obj["a"].pickled_global == "builtins.exec" and obj["b"] == [1, 2.5, "x"]
    assert not target.exists()


def test_bundled_weights_entry_is_the_default_when_shipped() -> None:
    bundled = WEIGHTS[download.BUNDLED]
    assert bundled.bundled and bundled.url is None
    assert get_config(bundled.architecture).name == bundled.architecture
    if download.is_cached(bundled):
        assert download.default_weights() == download.BUNDLED
        assert load_model(download.BUNDLED).architecture == bundled.architecture
    else:
        assert download.default_weights() == download.FALLBACK_DEFAULT
        with pytest.raises(download.WeightsUnavailableError, match="not available"):
            load_model(download.BUNDLED)
