"""Data: the synthetic VOC-layout generator, reading and checking a VOC root, splits, classes, captions."""
