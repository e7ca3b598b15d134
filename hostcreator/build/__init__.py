"""build layer."""
