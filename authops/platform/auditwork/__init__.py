"""Third-party audit support and the yearly reports."""
