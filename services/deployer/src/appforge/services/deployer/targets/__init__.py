"""Where deployments publish to: `local` (a directory served over HTTP) and `s3`."""
