"""Hostile weights files beyond tests/model/test_checkpoints.py: the legacy (non-zip)
torch format, bare pickles, payloads that call ``os.system`` / ``exec`` / ``eval``, and
allowlisted tensor rebuilders given garbage. Outcome: refused with a clear message naming
the file; the payload never runs (the file it would write does not exist)."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch

from napari_sam.model.checkpoints import CheckpointError, load_model, read_state_dict
from napari_sam.predictor import Predictor


class _Payload:
    """Unpickling this calls ``func(arg)``, which writes ``target``."""

    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _payloads(target: Path) -> dict[str, _Payload]:
    code = f"open({str(target)!r}, 'w').write('pwned')"
    return {
        "exec": _Payload(builtins.exec, code),
        "eval": _Payload(builtins.eval, code),
        "os.system": _Payload(os.system, f"touch {target}"),
    }


@pytest.mark.parametrize("kind", ["exec", "eval", "os.system"])
@pytest.mark.parametrize("fmt", ["zip", "legacy", "bare pickle"])
def test_payload_never_runs_and_the_file_is_refused(tmp_path: Path, kind: str, fmt: str):
    target = tmp_path / "pwned.txt"
    payload = _payloads(target)[kind]
    obj = {"image_encoder.pos_embed": payload}
    path = tmp_path / f"evil-{fmt}.pt"
    if fmt == "bare pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    for load in (load_model, Predictor.load):
        with pytest.raises(CheckpointError):
            load(str(path), **({"device": "cpu"} if load is Predictor.load else {}))
    assert not target.exists()


def test_tensor_rebuilder_given_garbage_is_a_clear_error(tmp_path: Path):
    class Bogus:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, ("not storage", -5, (1 << 62,), (1,)))

    path = tmp_path / "bogus.pt"
    with open(path, "wb") as f:
        pickle.dump({"mask_decoder.x": Bogus()}, f)
    with pytest.raises(CheckpointError, match=r"bogus\.pt"):
        read_state_dict(path)


def test_a_state_dict_of_the_wrong_shapes_is_refused(tmp_path: Path, tiny_sam):
    state = {k: torch.zeros(1) for k in tiny_sam.state_dict()}
    path = tmp_path / "shapes.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError):
        load_model(path)
