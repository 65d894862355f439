"""
Resumable uploads with the tus 1.0.0 protocol: the protocol
(L{streamrelay.tus.protocol}, its headers in L{streamrelay.tus.headers}),
the seam for partial uploads (L{streamrelay.tus.interfaces}) and its
folder and S3 implementations (L{streamrelay.tus.disk},
L{streamrelay.tus.s3}), wired by L{streamrelay.tus.config}.
"""
