"""Jobs over HTTP: submit and follow background jobs of your organisation."""
