"""End-to-end tests: the whole job with real agents, real installers, real files."""
