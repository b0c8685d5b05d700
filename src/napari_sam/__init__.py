"""napari-sam: Segment Anything for microscopy in napari.

Importing this package loads neither Qt nor napari's GUI.
"""

__version__ = "0.1.0"
