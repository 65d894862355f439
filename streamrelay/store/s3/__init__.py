"""
S3-compatible object storage (AWS S3, Ceph RGW, MinIO, SeaweedFS) behind
the store seam: C{--storage s3://bucket/prefix}.

C{interfaces} says what the stores need of S3 (L{IS3Client}); C{client}
does it over HTTP (treq), with C{signing} (botocore's SigV4, payload
hashes) and C{messages} (S3's XML); C{upload} streams one new file into a
multipart upload; C{publishing} is what uploads and the resumable uploads
of L{streamrelay.tus.s3} share (S3's limits, errors, copies inside S3,
background clean-up); C{reading} streams objects back; C{store} is the
L{IUploadStore}, and C{config} builds one from the backend's options.
"""
