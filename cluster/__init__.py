from cluster.storage_requests import count_s3_requests

count_s3_requests()  # every process that touches storage counts its S3 requests, for the ledger
