"""semivl_edge: SemiVL semi-supervised segmentation as a DVC pipeline, from GPU training to mobile runtimes."""

__version__ = "0.1.0"
