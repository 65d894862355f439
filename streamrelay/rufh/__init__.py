"""
IETF Resumable Uploads for HTTP (draft-ietf-httpbis-resumable-upload),
beside tus 1.0 on the same resumable store.
"""
