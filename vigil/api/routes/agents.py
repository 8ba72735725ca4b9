"""Agents: list and show (read-only role); remove and send commands (admin role)."""

from __future__ import annotations

import logging
from typing import Any, Literal, Self

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.api.auth import Principal, require
from vigil.api.backend import CommandFailed, CommandTimedOut
from vigil.api.context import ApiContext, context, errors, next_offset, page_bounds

log = logging.getLogger(__name__)
router = APIRouter(tags=["agents"])
reader = require("read-only")
admin = require("admin")

Status = Literal["active", "disconnected", "never_connected", "removed"]


class AgentPage(BaseModel):
    total: int
    offset: int
    limit: int
    next_offset: int | None
    items: list[dict[str, Any]]


class Command(BaseModel):
    """`ping` takes no args; `restart-module` needs `args.module`, the module's name."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["ping", "restart-module"]
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="how long to wait for the agent's answer")

    @model_validator(mode="after")
    def _module_named(self) -> Self:
        if self.op == "restart-module" and not (isinstance(self.args.get("module"), str) and self.args["module"]):
            raise ValueError('restart-module needs args.module, the name of the module (e.g. {"module": "docker"})')
        return self


class Removed(BaseModel):
    removed: str


def _agent(ctx: ApiContext, key: str) -> dict[str, Any]:
    agent = ctx.backend.get_agent(key)
    if agent is None:
        raise HTTPException(404, f"no agent with id or name {key!r}")
    return agent


@router.get("/agents", response_model=AgentPage, responses=errors(400, 422), dependencies=[Depends(reader)])
def list_agents(
    ctx: ApiContext = Depends(context),
    status: Status | None = Query(None, description="only agents in this state"),
    limit: int = Query(100, ge=1, description="page size, at most api.max_page_size"),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    page_bounds(ctx, limit)
    agents = [a for a in ctx.backend.list_agents() if status is None or a.get("status") == status]
    shown = agents[offset:offset + limit]
    return {"total": len(agents), "offset": offset, "limit": limit,
            "next_offset": next_offset(offset, len(shown), len(agents)), "items": shown}


@router.get("/agents/{agent_id}", response_model=dict[str, Any], responses=errors(404),
            dependencies=[Depends(reader)])
def get_agent(agent_id: str, ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return _agent(ctx, agent_id)


@router.delete("/agents/{agent_id}", response_model=Removed, responses=errors(403, 404, 409))
def remove_agent(agent_id: str, ctx: ApiContext = Depends(context),
                 caller: Principal = Depends(admin)) -> dict[str, Any]:
    agent = _agent(ctx, agent_id)
    try:
        removed = ctx.backend.remove_agent(agent_id)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    if not removed:
        raise HTTPException(404, f"agent {agent_id!r} is unknown or removed already")
    log.info("agent %s (%s) removed by %s %s", agent.get("id"), agent.get("name"), caller.kind, caller.name)
    return {"removed": str(agent.get("id", agent_id))}


@router.post("/agents/{agent_id}/commands", response_model=dict[str, Any],
             responses=errors(400, 403, 404, 422, 502, 504))
def send_command(agent_id: str, command: Command, ctx: ApiContext = Depends(context),
                 caller: Principal = Depends(admin)) -> dict[str, Any]:
    log.info("command %s %s to agent %s by %s %s", command.op, command.args, agent_id, caller.kind, caller.name)
    try:
        return ctx.backend.send_command(agent_id, command.op, command.args, command.timeout_seconds)
    except LookupError:
        raise HTTPException(404, f"no agent with id or name {agent_id!r}") from None
    except CommandTimedOut as exc:
        raise HTTPException(504, f"agent {agent_id!r} did not answer {command.op!r}: {exc}") from None
    except CommandFailed as exc:
        raise HTTPException(502, f"agent {agent_id!r} could not run {command.op!r}: {exc}") from None
