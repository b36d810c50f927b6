"""Contrastive pretraining of the embedded CLIP on synthetic image-caption pairs (stage `clip_pretrain`)."""
