"""disk layer."""
