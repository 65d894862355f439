"""The proxy: the public face, streaming every body to a backend."""
