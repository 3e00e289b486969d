"""Pure per-example image augmentations, their batch forms, batch mixing and policies."""
