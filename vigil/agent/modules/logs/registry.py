"""The log modules a configuration asks for, in one list (DESIGN §4: nothing found by guesswork)."""

from __future__ import annotations

from vigil.agent.modules.base import BatchSink, Module, StateReader
from vigil.config import LogsConfig
from vigil.event import AgentRef


def log_modules(config: LogsConfig, agent: AgentRef, sink: BatchSink, read_state: StateReader) -> list[Module]:
    if not config.enabled:
        return []
    from vigil.agent.modules.logs.collector import LogsModule
    from vigil.agent.modules.logs.journal import JournalModule, journal_wanted

    modules: list[Module] = [LogsModule(config, agent, sink, read_state)]
    if journal_wanted(config):
        modules.append(JournalModule(config, agent, sink, read_state))
    if config.syslog.enabled:
        from vigil.agent.modules.logs.syslog_receiver import SyslogReceiver

        modules.append(SyslogReceiver(config.syslog, agent, sink, config.max_line_bytes))
    return modules
