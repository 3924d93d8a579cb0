"""Transport: dev PKI, mTLS credentials, channel/server factories, interceptors, error table.

Submodules are imported explicitly (``blindsum.transport.pki`` does not pull in grpc).
"""
