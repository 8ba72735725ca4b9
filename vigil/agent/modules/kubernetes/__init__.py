"""Kubernetes sources: API server audit events (webhook, log file, EKS, GKE) and the API watch."""
