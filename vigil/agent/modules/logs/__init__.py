"""The log collector: host files and globs, Docker and Kubernetes container logs, the journal, syslog."""
