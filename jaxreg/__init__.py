"""jaxreg: data augmentation and regularization for small vision models in JAX/Flax."""
