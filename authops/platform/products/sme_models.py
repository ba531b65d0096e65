"""SME credit services tables (white list subscriptions, financing requests)."""
