"""Audit logs of managed Kubernetes clusters: EKS through CloudWatch Logs, GKE through Pub/Sub."""
