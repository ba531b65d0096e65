"""Policies: the permission matrix, the casbin enforcer, release policies and budgets."""
