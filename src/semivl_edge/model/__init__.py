"""The SemiVL network on open_clip: dense CLIP encoder, VLG / plain decoders, CLIP loading and model files.

Import from the modules (`model.segmenter`, `model.io`, ...): this file stays empty so that a stage which needs
one of them does not import, and depend on, all of them."""
