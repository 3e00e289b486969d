"""Test-wide settings: strict dtype promotion and rank promotion that raises (DESIGN.md)."""
import jax

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
