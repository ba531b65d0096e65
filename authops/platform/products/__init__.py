"""Serving registered products: precomputed answer sets, synchronous calls, batch delivery."""
