"""Products: declarative product specs and their invocation."""
