"""
Resumable uploads with the tus 1.0.0 protocol: the protocol
(L{streamrelay.tus.protocol}), the seam for partial uploads
(L{streamrelay.tus.interfaces}) and its folder implementation
(L{streamrelay.tus.disk}).
"""
