"""Finetuning and training of SAM models (no napari, no Qt).

- :mod:`~napari_sam.training.data`: image / label pairs from folders, zarr, napari layers or
  the synthetic generator (:mod:`~napari_sam.training.synthetic`);
- :mod:`~napari_sam.training.augment`: flips, rotations, crops, contrast / gamma / noise;
- :mod:`~napari_sam.training.prompting`: first prompts and corrective clicks;
- :mod:`~napari_sam.training.rounds`: SAM's interactive rounds on one image embedding;
- :mod:`~napari_sam.training.losses`: focal + dice (20:1) on the best mask, IoU MSE;
- :mod:`~napari_sam.training.trainer`: the loop, checkpoints and weights export;
- :mod:`~napari_sam.training.evaluate`: box / centre-point mIoU and the Otsu baseline.

Submodules are imported on use: ``import napari_sam.training`` stays light.
"""
