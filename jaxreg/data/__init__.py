"""Data sets as arrays: built-in offline sets, TFDS, image folders, and sampling helpers."""
