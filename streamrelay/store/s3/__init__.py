"""
S3-compatible object storage (AWS S3, Ceph RGW, MinIO, SeaweedFS) behind
the store seam: C{--storage s3://bucket/prefix}.

C{client} signs (botocore's SigV4) and sends (treq) the S3 requests,
C{messages} reads and writes their XML, C{upload} streams one new file
into a multipart upload, C{store} is the L{IUploadStore}, and C{config}
builds one from the backend's options.
"""
