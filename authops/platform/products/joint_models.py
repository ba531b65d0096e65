"""Joint modelling tables (customer labels, models, evaluations)."""
