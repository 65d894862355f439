"""The backend: keeps uploads in a store."""
