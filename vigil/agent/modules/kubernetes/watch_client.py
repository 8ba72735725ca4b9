"""The Kubernetes API client of the watch: its configuration, and the list function of each resource.

The `kubernetes` package is imported only here and only when a watch starts, so Vigil runs without it
wherever nothing is watched.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vigil.agent.modules.kubernetes.watch_normalize import RESOURCES
from vigil.config_kubernetes import WatchConfig

PAGE = 500  # objects per list request
CONNECT_SECONDS = 10.0
# resource -> (API class in kubernetes.client, list function over all namespaces)
_LISTERS: dict[str, tuple[str, str]] = {
    "pods": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "configmaps": ("CoreV1Api", "list_config_map_for_all_namespaces"),
    "secrets": ("CoreV1Api", "list_secret_for_all_namespaces"),
    "namespaces": ("CoreV1Api", "list_namespace"),
    "serviceaccounts": ("CoreV1Api", "list_service_account_for_all_namespaces"),
    "services": ("CoreV1Api", "list_service_for_all_namespaces"),
    "deployments": ("AppsV1Api", "list_deployment_for_all_namespaces"),
    "daemonsets": ("AppsV1Api", "list_daemon_set_for_all_namespaces"),
    "statefulsets": ("AppsV1Api", "list_stateful_set_for_all_namespaces"),
    "replicasets": ("AppsV1Api", "list_replica_set_for_all_namespaces"),
    "jobs": ("BatchV1Api", "list_job_for_all_namespaces"),
    "cronjobs": ("BatchV1Api", "list_cron_job_for_all_namespaces"),
    "roles": ("RbacAuthorizationV1Api", "list_role_for_all_namespaces"),
    "rolebindings": ("RbacAuthorizationV1Api", "list_role_binding_for_all_namespaces"),
    "clusterroles": ("RbacAuthorizationV1Api", "list_cluster_role"),
    "clusterrolebindings": ("RbacAuthorizationV1Api", "list_cluster_role_binding"),
    "mutatingwebhookconfigurations": ("AdmissionregistrationV1Api", "list_mutating_webhook_configuration"),
    "validatingwebhookconfigurations": ("AdmissionregistrationV1Api", "list_validating_webhook_configuration"),
}
assert set(_LISTERS) == set(RESOURCES)


def api_client(config: WatchConfig) -> tuple[Any, str]:
    """A client from the kubeconfig, or the pod's service account when running in a cluster; and its server."""
    from kubernetes import client
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    if config.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        path = str(config.kubeconfig) if config.kubeconfig else None
        kube_config.load_kube_config(config_file=path, context=config.context, client_configuration=configuration)
    configuration.client_side_validation = False
    return client.ApiClient(configuration), configuration.host


def lister(api: Any, resource: str) -> Any:
    """The client's list function for `resource` over all namespaces; with `watch` it opens the watch too."""
    from kubernetes import client

    class_name, method = _LISTERS[resource]
    return getattr(getattr(client, class_name)(api), method)


def list_all(api: Any, resource: str, config: WatchConfig) -> tuple[list[dict[str, Any]], str]:
    """Every object (page by page) and the list's resourceVersion, where the watch starts."""
    list_page = lister(api, resource)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False,
                                  "_request_timeout": (CONNECT_SECONDS, config.timeout_seconds)}
        if token:
            kwargs["_continue"] = token
        response = list_page(**kwargs)
        body = json.loads(response.data)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        page = body.get("items") if isinstance(body, dict) else None
        if not isinstance(metadata, dict) or not isinstance(page, list):
            raise ValueError(f"the {resource} list is not a Kubernetes list")
        items += [i for i in page if isinstance(i, dict)]
        token = metadata.get("continue") if isinstance(metadata.get("continue"), str) else None
        if not token:
            rv = metadata.get("resourceVersion")
            if not isinstance(rv, str) or not rv:
                raise ValueError(f"the {resource} list has no resourceVersion")
            return items, rv
