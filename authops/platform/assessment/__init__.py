"""Supervision over the year: pre-filing, annual assessment, consequences, department assessment."""
