"""The uploader: sends files through the proxy, with progress."""
