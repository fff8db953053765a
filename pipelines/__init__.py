"""How a run is put together: the spec, planning, the output's commit protocol, the Ray Data
pipeline. Importing it changes no global state; a process that runs units starts counting its S3
requests itself (cluster/storage_requests.py)."""
