from cluster.widget_notices import quiet_widget_notices

quiet_widget_notices()  # before anything imports Ray

from cluster.storage_requests import count_s3_requests  # noqa: E402

count_s3_requests()  # every process that touches storage counts its S3 requests, for the ledger
