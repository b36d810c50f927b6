"""Distillation of the trained SemiVL teacher into a small student (MGD's pixel-, region- and image-level terms)."""
