"""Core: settings, database, storage, crypto, errors and the job machinery."""
