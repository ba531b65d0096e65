"""Billing: revenue caps, price caps, orders, invoices and revenue sharing."""
