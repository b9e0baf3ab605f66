"""The deployer service: durable deployments with deadlines, retries, leases and a visible end."""
