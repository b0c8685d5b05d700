"""Test-only stand-in for the few torchvision functions the reference SAM packages import."""

__version__ = "0.0-napari-sam-test-stand-in"
