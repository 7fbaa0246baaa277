"""What a run started through the Prefect API may choose. Anyone who can reach the API can start a deployment's run
with parameters of their choosing, so:

- `project_dir`, `drop_dir` and `files` are fixed when the deployment is made: a run that passes others is refused
  (another folder's dvc.yaml would run, files elsewhere would be read or moved);
- `overrides` and a sweep's `grid` may set only the params keys listed in the project's `control.override_keys`
  (training budget keys by default; never the gate's or validation's).

A flow called in this process (`tuneline run`, the tests) is the project owner's and is not checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from tasks.config import load_params


class RunRefused(ValueError):
    """A deployment run asked for what a deployment run may not choose; nothing was done."""


def deployment_parameters() -> Optional[dict[str, Any]]:
    """The parameters the running deployment was made with; None when this run is not a deployment's."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment

    deployment_id = deployment.id
    if not deployment_id:
        return None
    with get_client(sync_client=True) as client:
        return dict(client.read_deployment(deployment_id).parameters or {})


def _same(given: Any, made: Any) -> bool:
    if isinstance(given, str) and isinstance(made, str):
        return Path(given).resolve() == Path(made).resolve()
    return given == made


def check_run(project_dir: str = ".", drop_dir: Optional[str] = None, files: Optional[list[str]] = None,
              overrides: Optional[dict[str, Any]] = None, grid: Optional[dict[str, list]] = None) -> None:
    """Refuse a deployment run whose fixed parameters differ from the deployment's, or whose overrides or grid
    name a key outside control.override_keys. The defaults here are the flows' own."""
    made = deployment_parameters()
    if made is None:
        return
    defaults = {"project_dir": ".", "drop_dir": None, "files": None}
    for name, given in (("project_dir", project_dir), ("drop_dir", drop_dir), ("files", files)):
        fixed = made.get(name, defaults[name])
        if not _same(given, fixed):
            raise RunRefused(f"parameter {name!r} is fixed when the deployment is made ({fixed!r}); this run asked "
                             f"for {given!r}: refused, nothing was done")
    keys = [*(overrides or {}), *(grid or {})]
    if keys:
        allowed = load_params(Path(made.get("project_dir", project_dir)) / "params.yaml").control.override_keys
        refused = [key for key in keys if key not in allowed]
        if refused:
            raise RunRefused(f"{', '.join(refused)}: not in control.override_keys ({', '.join(allowed)}), the params a "
                             "run started through the Prefect API may set; refused, nothing was done (the project's "
                             "owner can add keys there, or use `tuneline run -S`)")
