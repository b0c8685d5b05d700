import numpy as np
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.model.checkpoints import load_model
from napari_sam.training.synthetic import synthetic_nuclei

QUICK = ["--objects", "2", "--corrective-rounds", "1", "--refine-rounds", "0",
         "--checkpoint-every", "1", "--threads", "1", "--device", "cpu"]


def test_train_from_scratch_on_synthetic_data_and_resume(tmp_path):
    out, run_dir = tmp_path / "nano.pt", tmp_path / "run"
    args = ["train", "--synthetic", "2", "--model", "vit_nano", "--from-scratch",
            "--out", str(out), "--run-dir", str(run_dir), "--half", *QUICK]
    assert main([*args, "--steps", "2"]) == 0
    rows = (run_dir / "log.tsv").read_text().splitlines()
    assert rows[0].startswith("step\tloss") and len(rows) == 3
    state = torch.load(out, weights_only=True)
    assert state["mask_decoder.iou_token.weight"].dtype == torch.float16
    assert load_model(out).architecture == "vit_nano"
    # The same command with more steps resumes from the checkpoint.
    assert main([*args, "--steps", "3"]) == 0
    rows = (run_dir / "log.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2", "3"]


def _start_and_folders(tmp_path):
    """A one-step vit_nano weights file, and folders img/ and lab/ of 2 synthetic pairs."""
    start = tmp_path / "start.pt"
    assert main(["train", "--synthetic", "1", "--model", "vit_nano", "--from-scratch",
                 "--out", str(start), "--steps", "1", *QUICK]) == 0
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(2):
        s = synthetic_nuclei((96, 96), seed=i)
        tifffile.imwrite(tmp_path / "img" / f"{i}.tif", s.image)
        tifffile.imwrite(tmp_path / "lab" / f"{i}.tif", s.labels)
    return start


def test_finetune_decoder_from_a_weights_file_on_folders(tmp_path):
    start = _start_and_folders(tmp_path)
    out = tmp_path / "tuned.pt"
    assert main(["train", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--model", str(start), "--out", str(out), "--steps", "2",
                 "--freeze", "all_but_decoder", *QUICK]) == 0
    before, after = torch.load(start, weights_only=True), torch.load(out, weights_only=True)
    enc = "image_encoder.patch_embed.proj.weight"
    dec = "mask_decoder.output_upscaling.0.weight"
    assert torch.equal(before[enc].float(), after[enc])
    assert not torch.equal(before[dec].float(), after[dec])


def test_bad_source_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--model", "vit_nano", "--from-scratch", "--out",
                 str(tmp_path / "x.pt")])
    assert code == 2 and "exactly one data source" in capsys.readouterr().err
    assert not np.any([p.suffix == ".pt" for p in tmp_path.iterdir()])


def test_calibrate_changes_only_the_iou_head(tmp_path, capsys):
    start = _start_and_folders(tmp_path)
    out = tmp_path / "calibrated.pt"
    assert main(["calibrate", "--images", str(tmp_path / "img"), "--labels",
                 str(tmp_path / "lab"), "--model", str(start), "--out", str(out),
                 "--points-per-side", "4", "--no-centres", "--steps", "30", "--threads", "1"]) == 0
    assert "calibrated on 32 clicks of 2 images" in capsys.readouterr().err
    before, after = torch.load(start, weights_only=True), torch.load(out, weights_only=True)
    changed = {k for k in before if not torch.equal(before[k].float(), after[k])}
    assert changed and all(k.startswith("mask_decoder.iou_prediction_head.") for k in changed)
    assert load_model(out).architecture == "vit_nano"
    assert main(["calibrate", "--model", str(start), "--out", str(out)]) == 2


def test_an_unreadable_checkpoint_is_a_clear_error_that_never_advises_unpickling(
    tmp_path, capsys
):
    import pickle

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "checkpoint.pt", "wb") as f:  # a pickle with code: refused by torch
        pickle.dump({"step": eval}, f)
    code = main(["train", "--synthetic", "1", "--model", "vit_nano", "--from-scratch",
                 "--out", str(tmp_path / "x.pt"), "--run-dir", str(run_dir), "--steps", "1",
                 *QUICK])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "not a readable training checkpoint" in err and "checkpoint.pt" in err
    assert "weights_only" not in err and "Traceback" not in err
