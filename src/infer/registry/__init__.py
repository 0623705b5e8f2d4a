"""Registry: what the repository holds, what is loaded, and each version's lifecycle."""
