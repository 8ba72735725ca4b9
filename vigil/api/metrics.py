"""Prometheus text for GET /metrics, rendered from the Backend's `Metric` list by prometheus_client.

A collector that reads the Backend at scrape time, in a registry of its own: no global
registry, no counters kept twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from vigil.api.backend import Metric

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class BackendCollector(Collector):
    def __init__(self, source: Callable[[], list[Metric]]) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for metric in self.source():
            labels = sorted({name for sample_labels, _ in metric.samples for name in sample_labels})
            family: CounterMetricFamily | GaugeMetricFamily
            if metric.type == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=labels)
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
            for sample_labels, value in metric.samples:
                family.add_metric([sample_labels.get(name, "") for name in labels], value)
            yield family


def render(source: Callable[[], list[Metric]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackendCollector(source))
    return generate_latest(registry)
