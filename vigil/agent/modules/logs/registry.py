"""The log modules a configuration asks for, in one list (DESIGN §4: nothing found by guesswork)."""

from __future__ import annotations

from vigil.agent.modules.base import BatchSink, Module, StateReader
from vigil.config import LogsConfig
from vigil.config_kubernetes import HttpLogsConfig
from vigil.event import AgentRef


def log_modules(config: LogsConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader,
                http_logs: HttpLogsConfig | None = None) -> list[Module]:
    """`http_logs` (kubernetes.http_logs) has its own switch: it runs even with the collector off."""
    modules: list[Module] = []
    if config.enabled:
        from vigil.agent.modules.logs.collector import LogsModule
        from vigil.agent.modules.logs.journal import JournalModule, journal_wanted

        modules.append(LogsModule(config, agent, sink, read_state))
        if journal_wanted(config):
            modules.append(JournalModule(config, agent, sink, read_state))
        if config.syslog.enabled:
            from vigil.agent.modules.logs.syslog_receiver import SyslogReceiver

            modules.append(SyslogReceiver(config.syslog, agent, sink, config.max_line_bytes))
    if http_logs is not None and http_logs.enabled:
        from vigil.agent.modules.logs.http_lines import HttpLinesReceiver

        modules.append(HttpLinesReceiver(http_logs, agent, sink))
    return modules
